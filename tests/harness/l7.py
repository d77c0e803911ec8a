"""Loopback stand-ins for what the L7 HAProxy meets in a swarm, so the real binary can be driven.

- `TestDns`: a tiny UDP DNS server playing Docker's embedded DNS (A records for service names,
  NXDOMAIN for the rest), whose answers a test changes while HAProxy runs.
- `Backend`: an HTTP server on its own 127.0.0.x address playing one replica; it echoes what it
  received and its health URI can be made to fail.
- `Haproxy`: the rendered config, rewritten for loopback by `loopback_config` (the only changes,
  listed there), run in the foreground with its log kept for failure messages.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker

from components.model import CONFIG_NAMESPACE, EstateSpec, Route, Routing, load_estate
from components.render.l7 import CERT_DIR, DOCKER_DNS
from tests.harness.ports import free_ports
from tests.harness.specs import tool
from tests.harness.wait import wait_until
from tools.synth import RecordingMonitor, SynthResult, run_function

# At start-up HAProxy looks up every server slot (`init-addr libc`) through the host's resolver,
# which knows no swarm service; bound each wait where it cannot be avoided (glibc reads RES_OPTIONS).
HAPROXY_ENV = {**os.environ, "RES_OPTIONS": "timeout:1 attempts:1"}


@functools.cache
def _netns_ip() -> str | None:
    """`ip`, if a config check can run in a network namespace of its own (user namespaces allowed).
    There the start-up lookups fail at once instead of waiting on the host's DNS (seconds per 50
    routes), while loopback, brought up, still lets the resolvers section reach 127.0.0.11."""
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if not (ip and shutil.which("unshare")):
        return None
    probe = subprocess.run(["unshare", "-rn", ip, "link", "set", "lo", "up"], capture_output=True, timeout=10)
    return ip if probe.returncode == 0 else None


def _check_command(path: Path) -> list[str]:
    check = [tool("haproxy"), "-c", "-f", str(path)]
    ip = _netns_ip()
    return ["unshare", "-rn", "sh", "-c", f"{ip} link set lo up && exec {shlex.join(check)}"] if ip else check


def self_signed_pem(directory: Path, names: list[str]) -> Path:
    """A throwaway certificate + key bundle for `names`, as HAProxy loads it from a crt directory."""
    directory.mkdir(parents=True, exist_ok=True)
    key, crt = directory / "key.tmp", directory / "crt.tmp"
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={names[0]}",
         "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    bundle = directory / "test.pem"
    bundle.write_text(crt.read_text() + key.read_text())
    key.unlink()
    crt.unlink()
    return bundle


# --- DNS ------------------------------------------------------------------------------------


class TestDns:
    """Answers A queries for the names in `records`; NXDOMAIN for any other name, like Docker's DNS."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries = 0
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def set(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self.records[name.lower()] = list(addresses)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply:
                self.sock.sendto(reply, peer)

    def _answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        if qdcount != 1:
            return None
        labels, pos = [], 12
        while pos < len(query) and query[pos] != 0:
            length = query[pos]
            labels.append(query[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
        qtype, _qclass = struct.unpack("!HH", query[pos + 1 : pos + 5])
        question = query[12 : pos + 5]
        name = ".".join(labels).lower()
        with self._lock:
            self.queries += 1
            addresses = self.records.get(name)
        rd = flags & 0x0100
        if not addresses:  # Docker answers NXDOMAIN for a service without running tasks
            return struct.pack("!HHHHHH", qid, 0x8083 | rd, 1, 0, 0, 0) + question
        answers = b""
        if qtype == 1:  # A; an AAAA query of an IPv4 service gets an empty NOERROR answer
            for address in addresses:
                answers += struct.pack("!HHHIH", 0xC00C, 1, 1, 600, 4) + socket.inet_aton(address)
        count = len(addresses) if qtype == 1 else 0
        return struct.pack("!HHHHHH", qid, 0x8080 | rd, 1, count, 0, 0) + question + answers


# --- backends -------------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # HAProxy closing a check or a pooled connection early is not a test failure


class Backend:
    """One replica: `GET /...` answers 200 with JSON naming the replica and echoing the headers."""

    def __init__(self, name: str, address: str, port: int, check_uri: str = "/health"):
        self.name = name
        self.address = address
        self.port = port
        self.check_uri = check_uri
        self.healthy = True
        self.requests: list[dict[str, Any]] = []  # requests other than health checks
        self.checks = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep tests quiet
                pass

            def _reply(self, body: bool) -> None:
                if self.path == backend.check_uri:
                    backend.checks += 1
                    status, payload = (200, b"ok\n") if backend.healthy else (503, b"failing\n")
                    extra: dict[str, str] = {}
                else:
                    backend.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                    )
                    status = 200
                    payload = json.dumps({"backend": backend.name, "path": self.path}).encode()
                    extra = {"Set-Cookie": "JSESSIONID=s3ss10n; Path=/"} if self.path == "/login" else {}
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._reply(body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._reply(body=False)

        self.server = _QuietServer((address, port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_backends(names: list[str], first_host: int) -> list[Backend]:
    """Replicas on 127.0.0.<first_host>, <first_host+1>, … sharing one port, as tasks of one service do."""
    hosts = [f"127.0.0.{first_host + i}" for i in range(len(names))]
    port = free_ports(hosts=hosts)[0]
    return [Backend(name, address, port) for name, address in zip(names, hosts, strict=True)]


# --- HAProxy --------------------------------------------------------------------------------


# A node network on loopback: the L4 nodes' addresses (.5 virtual, .6 and .7) are ones a test can send from.
LOOPBACK_NODES = "127.0.0.0/24"
L4_NODE = "127.0.0.6"  # on LOOPBACK_NODES: the first L4 node
NOT_L4 = "127.0.0.99"  # on loopback, and none of the L4's


def estate(
    l7: dict[str, Any] | None = None,
    *,
    l4: bool = False,
    name: str = "t",
    stacks: dict[str, Any] | None = None,
    subnet: str = "172.28.0.0/24",
) -> EstateSpec:
    """A small valid estate (docker substrate, 2 L7-labelled workers) with the given `l7` settings (and `stacks`
    config, which the renderers read without the compose files); the L4 pair, when on, is .5 (virtual), .6 and .7
    of `subnet`."""
    net = subnet.rsplit(".", 1)[0]
    raw: dict[str, Any] = {
        "name": name,
        "domain": f"{name}.localhost",
        "substrate": "docker",
        "node_network": {"name": "test", "subnet": subnet},
        "swarm": {"managers": 1, "workers": {"count": 2, "labels": ["l7=true"]}},
        "l7": {"replicas": 2, **(l7 or {})},
    }
    if l4:
        raw["l4"] = {
            "enabled": True,
            "virtual_ip": f"{net}.5",
            "nodes": [{"name": "lb1", "address": f"{net}.6"}, {"name": "lb2", "address": f"{net}.7"}],
            "vrrp_auth_secret": "vrrpPassword",
        }
    if stacks:
        raw["stacks"] = stacks
    return load_estate(raw)


def route(stack: str, service: str, names: list[str], port: int, replicas: int = 1, **routing: Any) -> Route:
    """A Route as the stacks layer would produce it (effective port and replicas resolved)."""
    return Route(stack, service, tuple(names), port, replicas, Routing(dns_names=names, **routing))


def loopback_config(text: str, dns_port: int, cert_dir: Path | None) -> str:
    """The rendered config as a test runs it. The only changes, each of which must apply:

    - every `bind :<port>` listens on 127.0.0.1 only (the ports are the model's own, chosen free);
    - the resolvers ask the test DNS server instead of Docker's 127.0.0.11;
    - certificates are read from the test's directory instead of the image's;
    - server slots start empty (`init-addr none`) instead of asking the host's resolver first
      (`libc`), which knows no swarm service and would only add its timeouts to the start-up.
    """
    text, binds = re.subn(r"^(\s+bind) :", r"\1 127.0.0.1:", text, flags=re.M)
    text, slots = re.subn(r" init-addr libc,none$", " init-addr none", text, flags=re.M)
    assert slots == text.count("server-template "), slots
    text, servers = re.subn(
        rf"^(\s+nameserver \S+) {re.escape(DOCKER_DNS)}$", rf"\1 127.0.0.1:{dns_port}", text, flags=re.M
    )
    assert binds >= 1 and servers == 1, (binds, servers)
    if cert_dir is not None:
        text, certs = re.subn(rf" crt {re.escape(CERT_DIR)}/ ", f" crt {cert_dir}/ ", text)
        assert certs == 1, certs
    return text


def check_config(text: str, directory: Path) -> subprocess.CompletedProcess[str]:
    path = directory / "haproxy.cfg"
    path.write_text(text)
    return subprocess.run(
        _check_command(path),
        capture_output=True,
        text=True,
        timeout=120,
        env=HAPROXY_ENV,
    )


def unexpected_warnings(output: str) -> list[str]:
    """Warnings other than the expected one: template slots with no address before DNS fills them."""
    return [line for line in output.splitlines() if "[WARNING]" in line and "could not resolve address" not in line]


class Haproxy:
    def __init__(self, text: str, directory: Path, stats_port: int | None):
        self.path = directory / "haproxy.cfg"
        self.path.write_text(text)
        self.log_path = directory / "haproxy.log"
        self.stats_port = stats_port
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [tool("haproxy"), "-db", "-f", str(self.path)], stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.stats_port, timeout=2)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def up_servers(self, backend: str) -> set[str]:
        """Servers of `backend` HAProxy reports UP (from its Prometheus exporter)."""
        pattern = re.compile(
            r'^haproxy_server_status\{proxy="' + re.escape(backend) + r'",server="([^"]+)",state="UP"\} 1$', re.M
        )
        return set(pattern.findall(self.metrics()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


@contextmanager
def running_haproxy(
    text: str, directory: Path, stats_port: int | None, http_port: int, address: str = "127.0.0.1"
) -> Iterator[Haproxy]:
    proxy = Haproxy(text, directory, stats_port)
    try:
        wait_until(lambda: proxy.alive() and _listening(address, http_port), 15, "haproxy to listen", every=0.05)
        yield proxy
    except BaseException:
        print(proxy.log()[-4000:])
        raise
    finally:
        proxy.stop()


def _listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


# --- the component under Pulumi's mock engine ----------------------------------------------


def synth_l7(
    spec: EstateSpec, routes: list[Route], secrets: dict[str, str], monitor: RecordingMonitor | None = None
) -> SynthResult:
    """Register the L7 component (with a provider and the haproxy-public network) under the synth's
    mock engine; `secrets` are the secret config keys; `config_name`/`service_name` are exported."""
    from components.config_secrets import SecretSource
    from components.l7 import L7, L7Args

    def program() -> L7:
        provider = docker.Provider("swarm", host="ssh://ops@manager1")
        network = docker.Network(
            "haproxy-public",
            name="haproxy-public",
            driver="overlay",
            attachable=True,
            opts=pulumi.ResourceOptions(provider=provider),
        )
        l7 = L7("l7", L7Args(spec=spec, routes=routes, provider=provider, network=network, secrets=SecretSource()))
        pulumi.export("config_name", l7.config_name)
        pulumi.export("service_name", l7.service_name)
        return l7

    return run_function(program, {f"{CONFIG_NAMESPACE}:{k}": v for k, v in secrets.items()}, monitor=monitor)


# --- client ---------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


def request(
    port: int,
    host: str,
    path: str = "/",
    *,
    tls: bool = False,
    source: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Reply:
    """One request through HAProxy with the given Host header, optionally from a chosen 127.0.0.x."""
    source_address = (source, 0) if source else None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=5, context=context, source_address=source_address
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=source_address)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def sent_from_l4_node(l4_text: str) -> str:
    """A generated L4 config as a loopback test runs it: its connections to the L7 leave from the first L4 node's
    address (a real L4 node has no other), not from 127.0.0.1, which the kernel would pick on loopback."""
    text, count = re.subn(r"^defaults\n", f"defaults\n    source {L4_NODE}\n", l4_text, flags=re.M)
    assert count == 1
    return text


def proxied_request(port: int, host: str, client: str, *, tls: bool = False, source: str = L4_NODE) -> Reply:
    """A request preceded by a PROXY protocol v1 header claiming `client`, sent from `source` (by default an L4
    node, as the L4 pair sends it)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    raw.sendall(f"PROXY TCP4 {client} 127.0.0.1 40000 {port}\r\n".encode())
    sock: socket.socket = raw
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(raw, server_hostname=host)
    try:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return Reply(status, headers, body)
