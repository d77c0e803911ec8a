"""Smoke test of a deployed estate: every public URL and health URI, through every L7 entry point.

    python -m tools.smoke STACK [--outputs FILE] [--wait SECONDS]

Reads the stack outputs (through the Pulumi Automation API, or from FILE: the `outputs.json` a
synth writes, or `pulumi stack output --json`), then requests each URL with its Host header (and
TLS server name) from each L7 entry point: `l7_entrypoints` / `l7_https_entrypoints` on docker
nodes, else the L4 virtual IP. Exits 1 with a table of what failed, 2 when it cannot start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent


class SmokeError(Exception):
    """The smoke test cannot run at all (no outputs, no entry point, no Pulumi CLI)."""


@dataclass(frozen=True)
class EntryPoint:
    http: str
    https: str | None


@dataclass(frozen=True)
class Check:
    url: str
    entry: str
    status: str
    ok: bool
    detail: str = ""


def entry_points(outputs: dict[str, Any]) -> list[EntryPoint]:
    plain = list(outputs.get("l7_entrypoints") or [])
    tls = list(outputs.get("l7_https_entrypoints") or [])
    if plain:
        return [EntryPoint(url, tls[i] if i < len(tls) else None) for i, url in enumerate(plain)]
    vip = outputs.get("l4_virtual_ip")
    if vip:
        return [EntryPoint(f"http://{vip}", f"https://{vip}")]
    raise SmokeError("the stack exports neither l7_entrypoints nor l4_virtual_ip: nothing to send requests to")


def targets(outputs: dict[str, Any]) -> list[str]:
    urls = list(outputs.get("public_urls") or []) + list(outputs.get("health_urls") or [])
    return list(dict.fromkeys(urls))


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to the entry point's address, with the public name as TLS server name (SNI)."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self._server_name)


def _tls_context() -> ssl.SSLContext:
    # Branch clusters use self-signed certificates; this checks routing, not the certificate chain.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _request(entry: str, host: str, path: str, timeout: float) -> http.client.HTTPResponse:
    parts = urlsplit(entry)
    address = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = _PinnedTLS(address, parts.port or 443, host, _tls_context(), timeout)
    else:
        conn = http.client.HTTPConnection(address, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "swarm-estate-smoke"})
        response = conn.getresponse()
        response.read(65536)
        return response
    finally:
        conn.close()


def probe(url: str, entry: EntryPoint, timeout: float = 10.0) -> Check:
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    use_tls = parts.scheme == "https" and entry.https is not None
    via = entry.https if use_tls and entry.https else entry.http
    try:
        response = _request(via, host, path, timeout)
    except (OSError, http.client.HTTPException) as exc:
        return Check(url, via, "-", False, f"{type(exc).__name__}: {exc}")
    status = str(response.status)
    location = response.getheader("Location") or ""
    if 300 <= response.status < 400 and location.startswith(f"https://{host}") and not use_tls:
        return Check(url, via, status, False, "redirects to HTTPS, and the stack exports no HTTPS entry point")
    if 200 <= response.status < 400:
        return Check(url, via, status, True, location and f"-> {location}")
    return Check(url, via, status, False, response.reason or "")


def run_checks(outputs: dict[str, Any], timeout: float = 10.0, wait: float = 0.0) -> list[Check]:
    """Probe everything; retry the failures until `wait` seconds have passed (L7 may still converge)."""
    points = entry_points(outputs)
    urls = targets(outputs)
    if not urls:
        raise SmokeError("the stack exports no public_urls: nothing to test")
    results = {(u, i): probe(u, p, timeout) for u in urls for i, p in enumerate(points)}
    deadline = time.monotonic() + wait
    while any(not c.ok for c in results.values()) and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        for key, check in results.items():
            if not check.ok:
                results[key] = probe(key[0], points[key[1]], timeout)
    return list(results.values())


def table(checks: list[Check]) -> str:
    rows = [("RESULT", "STATUS", "URL", "ENTRY POINT", "DETAIL")]
    rows += [("ok" if c.ok else "FAIL", c.status, c.url, c.entry, c.detail) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def stack_outputs(stack: str) -> dict[str, Any]:
    if shutil.which("pulumi") is None:
        raise SmokeError(
            "the Pulumi CLI is not installed, and the Automation API needs it to read the stack outputs: "
            "install it (https://www.pulumi.com/docs/install/) or pass --outputs FILE"
        )
    from pulumi import automation as auto

    try:
        selected = auto.select_stack(stack_name=stack, work_dir=str(PROJECT_DIR))
        return {key: out.value for key, out in selected.outputs().items()}
    except auto.errors.CommandError as exc:
        raise SmokeError(f"cannot read the outputs of stack {stack!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.smoke", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("stack", help="the stack to test")
    parser.add_argument("--outputs", type=Path, help="read the outputs from this JSON file instead of the stack")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--wait", type=float, default=0.0, help="keep retrying failures for this long (seconds)")
    args = parser.parse_args(argv)
    try:
        outputs = json.loads(args.outputs.read_text()) if args.outputs else stack_outputs(args.stack)
        checks = run_checks(outputs, timeout=args.timeout, wait=args.wait)
    except (SmokeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [c for c in checks if not c.ok]
    print(table(checks))
    print(f"\n{args.stack}: {len(checks) - len(failed)} of {len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
