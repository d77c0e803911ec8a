"""Free ports for the processes a test starts (HAProxy, dockerd's swarm listener, a dev estate's entrypoints)."""

from __future__ import annotations

import socket
from collections.abc import Sequence


def free_ports(count: int = 1, consecutive: int = 1, hosts: Sequence[str] = ("127.0.0.1",)) -> list[int]:
    """`count` ranges of `consecutive` ports, each free now on every one of `hosts` (the first port of each).

    Free now, not reserved: another process may take one before the test binds it, which on a shared machine
    shows up as a clear bind error, not as a wrong result."""
    found: list[int] = []
    for _ in range(200):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            start = s.getsockname()[1]
        if start + consecutive > 65535 or any(abs(start - f) < consecutive + 1 for f in found):
            continue
        try:
            for host in hosts:
                for port in range(start, start + consecutive):
                    with socket.socket() as s:
                        s.bind((host, port))
        except OSError:
            continue
        found.append(start)
        if len(found) == count:
            return found
    raise RuntimeError(f"no free ports on {', '.join(hosts)}")
