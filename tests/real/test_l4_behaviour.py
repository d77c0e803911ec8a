"""The generated L4 HAProxy config, running for real on loopback in front of two PROXY-protocol TLS backends.

The backends are HAProxy processes playing the L7 side (`accept-proxy` on a TLS port with a throwaway
certificate and on a plain HTTP port) on two loopback addresses sharing the ports, like two L7 nodes. Only the listen
addresses and ports of the generated config are replaced, through the renderer's parameters.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.model import load_estate
from components.render.l4 import L4Backend, render_haproxy
from components.units import duration_ms
from tests.harness.ports import free_ports
from tests.harness.project import estate_of
from tests.harness.specs import run_tool, tool
from tests.harness.wait import LOADED, wait_until

pytestmark = pytest.mark.slow

BACKEND_ADDRESSES = ["127.0.0.2", "127.0.0.3"]
STARTUP_BOUND = 10.0


@dataclass
class L4Under:
    http_port: int
    https_port: int
    backend_http_port: int
    stats_socket: Path
    check_inter_ms: int
    check_fall: int
    backends: dict[str, subprocess.Popen[bytes]]


def _backend_config(name: str, address: str, port: int, http_port: int, pem: Path) -> str:
    # The reply names the backend, the port and the client address it learned from the PROXY header.
    return "\n".join(
        [
            "global",
            "    maxconn 200",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 5s",
            "    timeout server 5s",
            "frontend l7",
            f"    bind {address}:{port} ssl crt {pem} accept-proxy",
            f"    bind {address}:{http_port} accept-proxy",
            f'    http-request return status 200 content-type text/plain lf-string "backend={name} port=%[dst_port] '
            'src=%[src]\\n"',
            "",
        ]
    )


def _server_rows(stats_socket: Path) -> dict[str, dict[str, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(str(stats_socket))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "lb4_swarm_bk" and row.get("svname") not in ("BACKEND", "FRONTEND"):
            rows[row["svname"]] = row
    return rows


def _server_status(stats_socket: Path) -> dict[str, str]:
    return {name: row["status"] for name, row in _server_rows(stats_socket).items()}


def _flaps(stats_socket: Path) -> dict[str, str]:
    """Per server: UP->DOWN transitions and failed checks so far (explains a failure under load)."""
    rows = _server_rows(stats_socket)
    return {name: f"down {row['chkdown']}x, failed checks {row['chkfail']}" for name, row in rows.items()}


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # stderr to a file, not a pipe: nobody drains a pipe while the test runs, and a full one blocks HAProxy.
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out)


def _exited(procs: list[subprocess.Popen[bytes]]) -> bool:
    return any(p.poll() is not None for p in procs)


def _errors(logs: list[Path]) -> str:
    return "\n".join(f"{log.name}: {log.read_text(errors='replace')}" for log in logs)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def l4(tmp_path: Path) -> Iterator[L4Under]:
    haproxy = tool("haproxy")
    openssl = tool("openssl")
    key, crt, pem = tmp_path / "key.pem", tmp_path / "crt.pem", tmp_path / "l7.pem"
    made = run_tool(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=l7.test",
         "-keyout", str(key), "-out", str(crt)]
    )
    assert made.returncode == 0, made.stderr
    pem.write_text(crt.read_text() + key.read_text())

    backend_port, backend_http_port = free_ports(2, hosts=BACKEND_ADDRESSES)
    raw = estate_of("prod")
    raw["l7"]["https_port"] = backend_port  # the L4 health check targets the L7 HTTPS port
    spec = load_estate(raw)
    names = [n.name for n in spec.l7_nodes()][:2]
    backends = [
        L4Backend(name, addr, backend_port, backend_http_port)
        for name, addr in zip(names, BACKEND_ADDRESSES, strict=True)
    ]
    http_port, https_port = free_ports(2)
    config = render_haproxy(
        spec, backends, bind="127.0.0.1", http_port=http_port, https_port=https_port, runtime_dir=str(tmp_path)
    )
    (tmp_path / "l4.cfg").write_text(config)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    started: list[subprocess.Popen[bytes]] = []
    try:
        for backend in backends:
            cfg = tmp_path / f"{backend.name}.cfg"
            cfg.write_text(_backend_config(backend.name, backend.address, backend_port, backend_http_port, pem))
            procs[backend.name] = _start([haproxy, "-db", "-f", str(cfg)], tmp_path / f"{backend.name}.log")
            started.append(procs[backend.name])
        lb = _start([haproxy, "-db", "-f", str(tmp_path / "l4.cfg")], tmp_path / "l4.log")
        started.append(lb)
        stats = tmp_path / "admin.sock"
        wait_until(lambda: stats.exists() or _exited(started), STARTUP_BOUND, "the L4 stats socket appearing", 0.05)
        assert not _exited(started), _errors(sorted(tmp_path.glob("*.log")))
        wait_until(
            lambda: set(_server_status(stats).values()) == {"UP"} and len(_server_status(stats)) == 2,
            STARTUP_BOUND,
            "both L7 backends being UP",
            0.05,
        )
        yield L4Under(
            http_port, https_port, backend_http_port, stats, duration_ms(spec.l4.check.inter), spec.l4.check.fall, procs
        )
    finally:
        for proc in started:
            _stop(proc)


def _https_get(port: int, source: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx, source_address=(source, 0))
    try:
        conn.request("GET", "/", headers={"Host": "app.d4science.org"})
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode().strip()
    finally:
        conn.close()


def test_port_80_reaches_the_l7_with_the_client_address(l4: L4Under) -> None:
    """The L4 no longer answers :80 itself: the L7 decides what plain HTTP gets (a redirect, or the service of a
    name with `https_redirect: false`), and learns the client's address from the PROXY header."""
    source = "127.0.2.60"
    conn = http.client.HTTPConnection("127.0.0.1", l4.http_port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/path/page?q=1", headers={"Host": "conductor.d4science.org"})
        response = conn.getresponse()
        assert response.status == 200
        reply = response.read().decode().split()
    finally:
        conn.close()
    # the PROXY header carries where the client connected (the L4's :80) and from where
    assert reply[0].startswith("backend=") and reply[1:] == [f"port={l4.http_port}", f"src={source}"]
    # the same client lands on the same L7 node on both ports (both backends hash its address)
    assert reply[0] == _https_get(l4.https_port, source).split()[0]


def test_one_client_address_sticks_to_one_backend_and_arrives_with_its_address(l4: L4Under) -> None:
    seen_by_source: dict[str, set[str]] = {}
    for i in range(16):
        source = f"127.{(i * 37) % 250 + 1}.{(i * 91) % 250}.{(i * 53) % 250 + 2}"
        replies = {_https_get(l4.https_port, source) for _ in range(4)}
        assert len(replies) == 1, f"{source} was spread over {replies}; checks: {_flaps(l4.stats_socket)}"
        reply = replies.pop()
        # PROXY protocol: the L7 side sees the client's address, not the L4's.
        assert reply.endswith(f"src={source}")
        seen_by_source[source] = {reply.split()[0]}
    backends = set().union(*seen_by_source.values())
    assert len(backends) == 2, f"16 client addresses all hashed to {backends}: balance source is not balancing"


def test_a_stopped_backend_is_taken_out_and_its_clients_move(l4: L4Under) -> None:
    source = "127.0.1.50"
    first = _https_get(l4.https_port, source).split()[0].removeprefix("backend=")
    _stop(l4.backends[first])
    bound = l4.check_inter_ms * l4.check_fall / 1000  # one check interval per allowed failure, on an idle machine
    started = time.monotonic()
    wait_until(lambda: _server_status(l4.stats_socket).get(first) == "DOWN", LOADED * bound + 2, f"{first} marked DOWN",
               0.05, retry_on=(OSError,))  # fmt: skip
    print(f"{first} taken out after {time.monotonic() - started:.2f}s (check allows {bound:.2f}s; "
          f"{_flaps(l4.stats_socket)})")  # fmt: skip
    other = _https_get(l4.https_port, source).split()[0].removeprefix("backend=")
    assert other != first
