"""The smoke command against loopback servers that play the L7 entry point (plain and TLS)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.harness.project import ROOT
from tests.harness.tls import self_signed
from tools import smoke

OK_HOST = "demo.feature-a.ci.example.test"
BAD_HOST = "broken.feature-a.ci.example.test"
REDIRECT_HOST = "secure.feature-a.ci.example.test"


class FakeL7(BaseHTTPRequestHandler):
    """Routes by Host like the L7 HAProxy: one backend up, one down (503), one HTTPS-only."""

    seen: list[tuple[str, str]] = []
    server_names: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's method name
        host = (self.headers.get("Host") or "").split(":")[0]
        type(self).seen.append((host, self.path))
        tls = isinstance(self.connection, ssl.SSLSocket)
        if host == OK_HOST and self.path in ("/", "/health"):
            self._answer(200, b"ok")
        elif host == REDIRECT_HOST and not tls:
            self.send_response(301)
            self.send_header("Location", f"https://{REDIRECT_HOST}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif host == REDIRECT_HOST and tls:
            self._answer(200, b"secure ok")
        else:
            self._answer(503, b"<html>503 Service Unavailable: no server is available</html>")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def l7() -> Iterator[str]:
    FakeL7.seen = []
    yield from (f"http://{addr}" for addr in _serve(ThreadingHTTPServer(("127.0.0.1", 0), FakeL7)))


@pytest.fixture
def l7_tls(tmp_path: Path) -> Iterator[str]:
    cert, key = self_signed("*.feature-a.ci.example.test")
    pem = tmp_path / "l7.pem"
    pem.write_bytes(cert + key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    FakeL7.server_names = []

    def remember_sni(sock: object, server_name: str | None, ctx: ssl.SSLContext) -> None:
        FakeL7.server_names.append(server_name or "")

    context.sni_callback = remember_sni
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeL7)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from (f"https://{addr}" for addr in _serve(server))


def write_outputs(tmp_path: Path, **outputs: object) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"l4_virtual_ip": None, **outputs}))
    return path


def test_one_route_passing_one_failing_exits_non_zero_with_a_table(
    l7: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = write_outputs(
        tmp_path,
        public_urls=[f"http://{OK_HOST}/", f"http://{BAD_HOST}/"],
        health_urls=[f"http://{OK_HOST}/health"],
        l7_entrypoints=[l7],
    )
    assert smoke.main(["feature-a", "--outputs", str(outputs), "--timeout", "5"]) == 1
    out = capsys.readouterr().out
    lines = {line.split()[2]: line for line in out.splitlines()[1:] if line.strip() and "://" in line}
    assert lines[f"http://{BAD_HOST}/"].startswith("FAIL") and " 503 " in lines[f"http://{BAD_HOST}/"]
    assert lines[f"http://{OK_HOST}/"].startswith("ok") and " 200 " in lines[f"http://{OK_HOST}/"]
    assert lines[f"http://{OK_HOST}/health"].startswith("ok")
    assert "2 of 3 checks passed" in out
    assert (OK_HOST, "/health") in FakeL7.seen, "the health URI must be requested with its Host header"


def test_all_routes_passing_exits_zero(l7: str, tmp_path: Path) -> None:
    outputs = write_outputs(tmp_path, public_urls=[f"http://{OK_HOST}/"], l7_entrypoints=[l7, l7])
    assert smoke.main(["feature-a", "--outputs", str(outputs), "--timeout", "5"]) == 0
    assert FakeL7.seen.count((OK_HOST, "/")) == 2, "every L7 entry point is tried"


def test_https_urls_go_through_the_tls_entry_point_with_the_public_name(l7: str, l7_tls: str, tmp_path: Path) -> None:
    outputs = write_outputs(
        tmp_path,
        public_urls=[f"https://{REDIRECT_HOST}/", f"https://{BAD_HOST}/"],
        l7_entrypoints=[l7],
        l7_https_entrypoints=[l7_tls],
    )
    checks = smoke.run_checks(json.loads(outputs.read_text()), timeout=5)
    by_url = {c.url: c for c in checks}
    assert by_url[f"https://{REDIRECT_HOST}/"].ok and by_url[f"https://{REDIRECT_HOST}/"].entry == l7_tls
    assert not by_url[f"https://{BAD_HOST}/"].ok and by_url[f"https://{BAD_HOST}/"].status == "503"
    assert REDIRECT_HOST in FakeL7.server_names, "the TLS server name must be the public name"


def test_a_redirect_to_https_without_an_https_entry_point_fails_clearly(l7: str) -> None:
    (check,) = smoke.run_checks({"public_urls": [f"https://{REDIRECT_HOST}/"], "l7_entrypoints": [l7]}, timeout=5)
    assert not check.ok and check.status == "301"
    assert "no HTTPS entry point" in check.detail


def test_an_unreachable_entry_point_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        (check,) = smoke.run_checks(
            {"public_urls": [f"http://{OK_HOST}/"], "l7_entrypoints": [f"http://127.0.0.1:{port}"]}, timeout=2
        )
    assert not check.ok and "ConnectionRefusedError" in check.detail


def test_the_l4_virtual_ip_is_the_entry_point_without_docker_nodes() -> None:
    (point,) = smoke.entry_points({"l7_entrypoints": [], "l4_virtual_ip": "10.20.0.5"})
    assert point == smoke.EntryPoint("http://10.20.0.5", "https://10.20.0.5")
    with pytest.raises(smoke.SmokeError, match="neither l7_entrypoints nor l4_virtual_ip"):
        smoke.entry_points({"public_urls": ["https://a.example.org/"]})


def test_without_the_pulumi_cli_it_says_so(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tools.smoke", "feature-a"],
        cwd=ROOT,
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Pulumi CLI is not installed" in out.stderr and "--outputs" in out.stderr


def test_the_command_reads_a_synth_outputs_file(l7: str, tmp_path: Path) -> None:
    # The shape `python -m tools.synth` writes, with the entry point swapped for the fake L7.
    outputs = write_outputs(
        tmp_path, manager_addresses=["172.30.1.10"], public_urls=[f"http://{BAD_HOST}/"], l7_entrypoints=[l7]
    )
    out = subprocess.run(
        [sys.executable, "-m", "tools.smoke", "feature-a", "--outputs", str(outputs), "--timeout", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines()[0].split() == ["RESULT", "STATUS", "URL", "ENTRY", "POINT", "DETAIL"]
    assert "FAIL" in out.stdout and BAD_HOST in out.stdout
