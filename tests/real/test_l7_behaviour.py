"""The rendered L7 config, run by the real HAProxy on loopback against a test DNS server and
local backends: what a client and an operator would see in the swarm.

One HAProxy serves every scenario, each on its own service (with its own backend addresses), so
the scenarios do not disturb each other; the PROXY-protocol case runs a second one with an L4
pair in the model. Every wait is bounded; all ports are picked free.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.l7 import healthcheck_command
from components.model import EstateSpec, Route, Routing
from components.render.l4 import L4Backend, render_haproxy
from components.render.l7 import pickup_bound_ms, render_l7_config
from tests.harness.l7 import (
    L4_NODE,
    LOOPBACK_NODES,
    NOT_L4,
    Backend,
    Haproxy,
    TestDns,
    estate,
    loopback_config,
    proxied_request,
    request,
    route,
    running_haproxy,
    self_signed_pem,
    sent_from_l4_node,
    start_backends,
)
from tests.harness.ports import free_ports
from tests.harness.wait import LOADED, wait_until

pytestmark = pytest.mark.slow  # real HAProxy, real traffic

DOMAIN = "t.localhost"
CHECK = {"inter": "300ms", "rise": 2, "fall": 2}
RATE = 5  # requests per client address allowed in the rate-limited service's window

# service -> (replicas, first 127.0.0.x of its backends, routing)
SERVICES: dict[str, tuple[list[str], int, dict[str, Any]]] = {
    "web": (["web-a", "web-b"], 10, {"check_uri": "/health", "balance": "roundrobin"}),
    "api": (["api-a"], 20, {"check_uri": "/health"}),
    "plain": (["plain-a"], 25, {"check_uri": "/health", "https_redirect": False}),
    "cookie": (["cookie-a", "cookie-b"], 30, {"check_uri": "/health", "balance": "roundrobin", "sticky": "cookie"}),
    "session": (
        ["session-a", "session-b"],
        35,
        {"check_uri": "/health", "balance": "roundrobin", "sticky": "cookie", "cookie_name": "JSESSIONID"},
    ),
    "src": (["src-a", "src-b"], 40, {"check_uri": "/health", "balance": "roundrobin", "sticky": "src"}),
    "health": (["health-a", "health-b"], 50, {"check_uri": "/health", "balance": "roundrobin"}),
    "scale": (["scale-a", "scale-b"], 60, {"check_uri": "/health", "balance": "roundrobin"}),
    "limited": (["limited-a"], 70, {"check_uri": "/health", "rate_limit": {"requests": RATE, "period": "1m"}}),
    "admin": (["admin-a"], 75, {"check_uri": "/health", "allow": ["127.0.0.160/29"]}),
    "push": (["push-a"], 77, {"check_uri": "/health", "allow": ["127.0.0.168/29"], "allow_only_writes": True}),
}
NOT_IN_DNS_AT_START = {"scale-b"}  # a replica the test adds to DNS while HAProxy runs


@dataclass
class Running:
    spec: EstateSpec
    proxy: Haproxy
    dns: TestDns
    backends: dict[str, list[Backend]]
    http: int
    https: int


def host(service: str) -> str:
    return f"{service}.{DOMAIN}"


def addresses(backends: list[Backend]) -> list[str]:
    return [b.address for b in backends if b.name not in NOT_IN_DNS_AT_START]


def served_by(reply: Any) -> str:
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()["backend"]


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    self_signed_pem(directory, [DOMAIN, f"*.{DOMAIN}"])
    return directory


@pytest.fixture(scope="module")
def l7(tmp_path_factory: pytest.TempPathFactory, cert_dir: Path) -> Iterator[Running]:
    http, https, stats = free_ports(3)
    spec = estate(
        {"http_port": http, "https_port": https, "stats": {"port": stats}, "self_signed": True, "check": CHECK}
    )
    dns = TestDns()
    backends: dict[str, list[Backend]] = {}
    try:
        routes = []
        for service, (replicas, first, routing) in SERVICES.items():
            backends[service] = start_backends(replicas, first)
            routes.append(route("t", service, [host(service)], backends[service][0].port, len(replicas), **routing))
            dns.set(f"t_{service}", addresses(backends[service]))
        text = loopback_config(render_l7_config(spec, routes), dns.port, cert_dir)
        with running_haproxy(text, tmp_path_factory.mktemp("l7"), stats, http) as proxy:
            for service in SERVICES:
                expected = len(addresses(backends[service]))
                wait_until(
                    lambda s=service, n=expected: len(proxy.up_servers(f"t_{s}")) == n,
                    15,
                    f"t_{service} UP",
                    every=0.05,
                )
            yield Running(spec, proxy, dns, backends, http, https)
    finally:
        dns.close()
        for replicas in backends.values():
            for b in replicas:
                b.close()


# --- routing ----------------------------------------------------------------------------------


def test_host_header_selects_the_service(l7: Running) -> None:
    assert {served_by(request(l7.https, host("web"), tls=True)) for _ in range(4)} == {"web-a", "web-b"}
    assert served_by(request(l7.https, host("api"), tls=True)) == "api-a"
    assert served_by(request(l7.https, host("api").upper() + f":{l7.https}", tls=True)) == "api-a"  # case, port


def test_unknown_host_gets_the_default_answer(l7: Running) -> None:
    reply = request(l7.https, f"nobody.{DOMAIN}", tls=True)
    assert reply.status == 404
    assert b"no service is published under this name" in reply.body
    seen = [r["headers"]["host"] for replicas in l7.backends.values() for b in replicas for r in b.requests]
    assert f"nobody.{DOMAIN}" not in seen


def test_plain_http_is_redirected_and_https_carries_hsts(l7: Running) -> None:
    redirect = request(l7.http, host("web"), "/some/path?x=1")
    assert redirect.status == 301
    assert redirect.headers["location"] == f"https://{host('web')}/some/path?x=1"
    secure = request(l7.https, host("web"), tls=True)
    assert secure.headers["strict-transport-security"] == "max-age=63072000"
    # a service that opted out of the redirect is served on plain HTTP, without HSTS
    plain = request(l7.http, host("plain"))
    assert served_by(plain) == "plain-a"
    assert "strict-transport-security" not in plain.headers


def test_forwarded_headers_reach_the_backend(l7: Running) -> None:
    (api,) = l7.backends["api"]
    request(l7.https, host("api"), "/xff", tls=True, source="127.0.0.91", headers={"X-Forwarded-Proto": "http"})
    seen = api.requests[-1]["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.91"
    assert seen["x-forwarded-proto"] == "https"  # set by HAProxy, whatever the client claimed
    (plain,) = l7.backends["plain"]
    request(l7.http, host("plain"), "/xff", source="127.0.0.92")
    assert plain.requests[-1]["headers"]["x-forwarded-for"] == "127.0.0.92"
    assert plain.requests[-1]["headers"]["x-forwarded-proto"] == "http"


# --- stickiness -------------------------------------------------------------------------------


def test_cookie_keeps_a_client_on_one_replica(l7: Running) -> None:
    first = request(l7.https, host("cookie"), tls=True)
    cookie = first.headers["set-cookie"].split(";")[0]
    assert cookie.startswith("SERVERID=")
    replica = served_by(first)
    assert {served_by(request(l7.https, host("cookie"), tls=True, headers={"Cookie": cookie})) for _ in range(10)} == {
        replica
    }
    # without the cookie the same service spreads clients over both replicas
    assert {served_by(request(l7.https, host("cookie"), tls=True)) for _ in range(4)} == {"cookie-a", "cookie-b"}


def test_application_session_cookie_is_prefixed_and_sticks(l7: Running) -> None:
    login = request(l7.https, host("session"), "/login", tls=True)
    replica = served_by(login)
    name, _, value = login.headers["set-cookie"].split(";")[0].partition("=")
    assert name == "JSESSIONID" and value.endswith("~s3ss10n") and value != "s3ss10n"
    for _ in range(6):
        reply = request(l7.https, host("session"), tls=True, headers={"Cookie": f"JSESSIONID={value}"})
        assert served_by(reply) == replica
    seen = next(b for b in l7.backends["session"] if b.name == replica).requests[-1]["headers"]
    assert seen["cookie"] == "JSESSIONID=s3ss10n"  # the application sees its own cookie


def test_source_address_keeps_a_client_on_one_replica(l7: Running) -> None:
    chosen = {}
    for i in range(6):
        source = f"127.0.0.{100 + i}"
        replicas = {served_by(request(l7.https, host("src"), tls=True, source=source)) for _ in range(5)}
        assert len(replicas) == 1, (source, replicas)
        chosen[source] = replicas.pop()
    assert set(chosen.values()) == {"src-a", "src-b"}  # different clients do land on different replicas


# --- health and membership --------------------------------------------------------------------


def test_failing_replica_is_taken_out_and_put_back(l7: Running) -> None:
    a, b = l7.backends["health"]
    inter = 0.3
    a.healthy = False
    start = time.monotonic()
    wait_until(lambda: len(l7.proxy.up_servers("t_health")) == 1, LOADED * inter * CHECK["fall"] + 2, "health-a out",
               every=0.05)  # fmt: skip
    out = time.monotonic() - start
    assert Counter(served_by(request(l7.https, host("health"), tls=True)) for _ in range(8)) == {"health-b": 8}
    a.healthy = True
    start = time.monotonic()
    wait_until(
        lambda: len(l7.proxy.up_servers("t_health")) == 2, LOADED * inter * CHECK["rise"] + 2, "health-a back",
        every=0.05,
    )
    back = time.monotonic() - start
    assert {served_by(request(l7.https, host("health"), tls=True)) for _ in range(4)} == {"health-a", "health-b"}
    print(f"check URI failing -> out of rotation in {out:.2f}s, recovered -> back in {back:.2f}s")


def test_a_new_dns_address_gets_traffic_and_a_leaving_one_leaves(l7: Running) -> None:
    """Within the documented bound on an idle machine (printed here; tests/bench/ measures it), and well within a
    widened one on a loaded machine."""
    a, b = l7.backends["scale"]
    assert {served_by(request(l7.https, host("scale"), tls=True)) for _ in range(4)} == {"scale-a"}
    bound = pickup_bound_ms(l7.spec) / 1000
    l7.dns.set("t_scale", [a.address, b.address])
    start = time.monotonic()
    wait_until(
        lambda: served_by(request(l7.https, host("scale"), tls=True)) == "scale-b",
        LOADED * bound + 0.5,
        "scale-b to get traffic",
        every=0.02,
    )
    took = time.monotonic() - start
    # and a task that leaves Docker's DNS leaves the rotation as fast
    l7.dns.set("t_scale", [b.address])
    start = time.monotonic()
    wait_until(lambda: len(l7.proxy.up_servers("t_scale")) == 1, LOADED * bound + 0.5, "scale-a to leave",
               every=0.05)  # fmt: skip
    left = time.monotonic() - start
    print(f"new replica in DNS -> served after {took:.2f}s, gone -> out after {left:.2f}s (documented {bound:g}s)")
    assert {served_by(request(l7.https, host("scale"), tls=True)) for _ in range(4)} == {"scale-b"}


# --- allowlists -------------------------------------------------------------------------------


def test_an_allowlisted_route_answers_only_its_networks(l7: Running) -> None:
    assert served_by(request(l7.https, host("admin"), tls=True, source="127.0.0.161")) == "admin-a"
    assert request(l7.https, host("admin"), tls=True, source="127.0.0.150").status == 403
    assert served_by(request(l7.https, host("admin"), tls=True, source="127.0.0.167")) == "admin-a"
    assert request(l7.https, host("admin"), tls=True, source="127.0.0.168").status == 403  # just outside the /29


def test_a_write_only_allowlist_lets_everyone_read_and_only_its_networks_write(l7: Running) -> None:
    """The registry's shape: nodes pull from anywhere, pushes come from the operators' networks."""
    for source in ("127.0.0.150", "127.0.0.170"):
        assert served_by(request(l7.https, host("push"), tls=True, source=source)) == "push-a"
        assert request(l7.https, host("push"), tls=True, source=source, method="HEAD").status == 200
    assert request(l7.https, host("push"), tls=True, source="127.0.0.150", method="POST").status == 403
    assert request(l7.https, host("push"), tls=True, source="127.0.0.150", method="PUT").status == 403
    # from inside, the write reaches the service (which answers it as it likes: not HAProxy's 403)
    assert request(l7.https, host("push"), tls=True, source="127.0.0.170", method="POST").status != 403


# --- rate limit -------------------------------------------------------------------------------


def test_rate_limit_answers_429_past_the_threshold_only(l7: Running) -> None:
    statuses = [request(l7.https, host("limited"), tls=True, source="127.0.0.150").status for _ in range(RATE)]
    assert statuses == [200] * RATE
    assert request(l7.https, host("limited"), tls=True, source="127.0.0.150").status == 429
    assert request(l7.https, host("limited"), tls=True, source="127.0.0.151").status == 200  # per client address


# --- operators --------------------------------------------------------------------------------


def test_service_healthcheck_command_works_with_what_the_image_has(l7: Running, tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # like the official Debian-based image: bash, but no wget or nc
    bare.mkdir()
    for name in ("sh", "bash", "head", "grep"):
        os.symlink(
            subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip(),
            bare / name,
        )

    def healthy(spec: EstateSpec, path: str | None) -> bool:
        env = {"PATH": path} if path else None
        script = healthcheck_command(spec)[1]
        return subprocess.run(["sh", "-c", script], env=env, timeout=10, capture_output=True).returncode == 0

    without_stats = estate({"http_port": l7.http, "stats": {"enabled": False}})  # then: the HTTP port accepts
    dead = estate({"stats": {"port": free_ports()[0]}})
    for path in (None, str(bare)):  # this host's tools (wget where installed), then bash alone
        assert healthy(l7.spec, path)
        assert healthy(without_stats, path)
        assert not healthy(dead, path)


def test_operator_frontend_answers_monitor_uri_and_metrics(l7: Running) -> None:
    stats = l7.spec.l7.stats
    assert request(stats.port, "anything", stats.monitor_uri).status == 200
    metrics = l7.proxy.metrics()
    assert 'haproxy_backend_status{proxy="t_web",state="UP"} 1' in metrics


# --- behind the L4 pair ---------------------------------------------------------------------


def test_proxy_protocol_is_accepted_when_an_l4_pair_is_in_front(tmp_path: Path, cert_dir: Path) -> None:
    plain_port, tls_port, stats = free_ports(3)
    spec = estate(
        {
            "http_port": plain_port,
            "https_port": tls_port,
            "stats": {"port": stats},
            "self_signed": True,
            "check": CHECK,
        },
        l4=True,
        subnet=LOOPBACK_NODES,
    )
    dns = TestDns()
    (backend,) = start_backends(["l4-a"], 80)
    try:
        dns.set("t_web", [backend.address])
        routes = [route("t", "web", [host("web")], backend.port, 1, check_uri="/health")]
        text = loopback_config(render_l7_config(spec, routes), dns.port, cert_dir)
        with running_haproxy(text, tmp_path, stats, plain_port) as proxy:
            wait_until(lambda: proxy.up_servers("t_web"), 15, "t_web UP", every=0.05)
            reply = proxied_request(tls_port, host("web"), "198.51.100.7", tls=True)
            assert served_by(reply) == "l4-a"
            assert backend.requests[-1]["headers"]["x-forwarded-for"] == "198.51.100.7"  # the client, not the L4 node
            assert proxied_request(plain_port, host("web"), "198.51.100.8").status == 301
            # without the PROXY header the connection is refused: only the L4 pair may talk to L7
            with pytest.raises((http.client.HTTPException, OSError)):
                request(plain_port, host("web"), source=L4_NODE)
    finally:
        dns.close()
        backend.close()


def _refused(attempt: Callable[[], Any]) -> bool:
    try:
        attempt()
    except (http.client.HTTPException, OSError, ValueError):
        return True
    return False


def test_only_the_l4_pair_can_claim_a_client_address(tmp_path: Path, cert_dir: Path) -> None:
    """A host that reaches an L7 node directly cannot forge a client address with its own PROXY header: the L7
    closes the connection before it reads a header, so stickiness, rate limits and the apps' logs see only the
    addresses the L4 pair vouches for. From an L4 node a client address is taken and logged."""
    plain_port, tls_port, stats = free_ports(3)
    spec = estate({"http_port": plain_port, "https_port": tls_port, "stats": {"port": stats}, "self_signed": True,
                   "check": CHECK}, l4=True, subnet=LOOPBACK_NODES)  # fmt: skip
    dns = TestDns()
    (backend,) = start_backends(["guarded"], 85)
    limit = {"requests": RATE, "period": "1m"}
    try:
        dns.set("t_web", [backend.address])
        routes = [route("t", "web", [host("web")], backend.port, 1, check_uri="/health", rate_limit=limit,
                        allow=["203.0.113.0/24"])]  # fmt: skip
        text = loopback_config(render_l7_config(spec, routes), dns.port, cert_dir)
        with running_haproxy(text, tmp_path, stats, plain_port) as proxy:
            wait_until(lambda: proxy.up_servers("t_web"), 15, "t_web UP", every=0.05)
            # from an L4 node: the claimed client is served, forwarded and logged
            assert served_by(proxied_request(tls_port, host("web"), "203.0.113.9", tls=True)) == "guarded"
            assert backend.requests[-1]["headers"]["x-forwarded-for"] == "203.0.113.9"
            wait_until(lambda: "203.0.113.9:" in proxy.log(), 5 * LOADED, "the claimed client in the L7 log",
                       every=0.05)  # fmt: skip
            seen = len(backend.requests)
            # from anywhere else: a forged header (rotated to dodge the rate limit), TLS or plain, never gets through
            for i in range(3 * RATE):
                forged = f"198.51.100.{i + 1}"
                port, tls = (tls_port, True) if i % 2 else (plain_port, False)
                assert _refused(lambda f=forged, p=port, t=tls: proxied_request(p, host("web"), f, tls=t,
                                                                                source=NOT_L4)), forged  # fmt: skip
            assert _refused(lambda: request(plain_port, host("web"), source=NOT_L4))
            assert len(backend.requests) == seen
            assert "198.51.100." not in proxy.log()
            # the L4's own clients are still limited per claimed address
            statuses = [proxied_request(tls_port, host("web"), "203.0.113.50", tls=True).status
                        for _ in range(RATE + 1)]  # fmt: skip
            assert statuses[:RATE] == [200] * RATE and statuses[RATE] == 429
            # the allowlist holds on the address the L4 vouches for, not on the L4's own
            assert proxied_request(tls_port, host("web"), "192.0.2.1", tls=True).status == 403
    finally:
        dns.close()
        backend.close()


def test_plain_http_through_a_real_l4_pair_honours_https_redirect(tmp_path: Path, cert_dir: Path) -> None:
    """Client -> the generated L4 config -> the generated L7 config -> backends, all real HAProxy on loopback:
    over plain HTTP, a name with `https_redirect: false` is served and every other name is redirected."""
    l7_http, l7_https, stats, l4_http, l4_https = free_ports(5)
    spec = estate(
        {"http_port": l7_http, "https_port": l7_https, "stats": {"port": stats}, "self_signed": True, "check": CHECK},
        l4=True,
        subnet=LOOPBACK_NODES,
    )
    dns = TestDns()
    (web,) = start_backends(["chain-web"], 90)
    (plain,) = start_backends(["chain-plain"], 95)
    try:
        dns.set("t_web", [web.address])
        dns.set("t_plain", [plain.address])
        routes = [
            route("t", "web", [host("web")], web.port, 1, check_uri="/health"),
            route("t", "plain", [host("plain")], plain.port, 1, check_uri="/health", https_redirect=False),
        ]
        l7_text = loopback_config(render_l7_config(spec, routes), dns.port, cert_dir)
        l4_text = sent_from_l4_node(render_haproxy(
            spec,
            [L4Backend("l7-node", "127.0.0.1", l7_https, l7_http)],
            bind="127.0.0.1",
            http_port=l4_http,
            https_port=l4_https,
            runtime_dir=str(tmp_path),
        ))  # fmt: skip
        (tmp_path / "l7").mkdir()
        (tmp_path / "l4").mkdir()
        with running_haproxy(l7_text, tmp_path / "l7", stats, l7_http) as l7_proxy, \
                running_haproxy(l4_text, tmp_path / "l4", None, l4_http):  # fmt: skip
            for service in ("t_web", "t_plain"):
                wait_until(lambda s=service: l7_proxy.up_servers(s), 15, f"{service} UP on the L7", every=0.05)
            # the L4 sends traffic once its own check of the L7 passed
            wait_until(lambda: request(l4_https, host("web"), tls=True).status == 200, 15,
                       "the L7 answering through the L4's HTTPS port", every=0.1)  # fmt: skip
            served = request(l4_http, host("plain"), "/p", source="127.0.0.93")
            assert served_by(served) == "chain-plain"
            assert "strict-transport-security" not in served.headers
            # the L7 learnt the client's address from the L4's PROXY header
            assert plain.requests[-1]["headers"]["x-forwarded-for"] == "127.0.0.93"
            redirected = request(l4_http, host("web"), "/a?b=1")
            assert redirected.status == 301
            assert redirected.headers["location"] == f"https://{host('web')}/a?b=1"
            assert served_by(request(l4_https, host("web"), tls=True)) == "chain-web"
    finally:
        dns.close()
        web.close()
        plain.close()


def _raw_get(address: str, port: int, source: str | None = None, proxy_header: str = "") -> bytes:
    """An HTTP request over a plain TCP connection (the TCP route knows nothing of HTTP); the whole answer."""
    with socket.create_connection((address, port), timeout=5, source_address=(source, 0) if source else None) as s:
        s.sendall(proxy_header.encode() + b"GET /over-tcp HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_a_tcp_route_carries_a_services_port_through_the_l7_and_the_l4(tmp_path: Path, cert_dir: Path) -> None:
    """`routing.tcp`: a port of a service served as plain TCP, found through Docker's DNS like the HTTP backends.
    Straight to the L7 (L4 off), and client -> generated L4 -> generated L7 (PROXY protocol between them) -> the
    service (L4 on); on a port nothing else serves, and with no Host header to route by."""
    (git,) = start_backends(["git-ssh"], 100)
    dns = TestDns()
    try:
        dns.set("t_git", [git.address])
        for with_l4 in (False, True):
            l7_http, l7_https, stats, l4_http, l4_https = free_ports(5)
            (published,) = free_ports(hosts=["127.0.0.1", "127.0.0.2"])
            routing = {"tcp": [{"port": git.port, "published": published}]}
            spec = estate({"http_port": l7_http, "https_port": l7_https, "stats": {"port": stats},
                           "self_signed": True, "check": CHECK}, l4=with_l4, subnet=LOOPBACK_NODES,
                          stacks={"t": {"compose": "unused.yml", "services": {"git": routing}}})  # fmt: skip
            routes = [Route("t", "git", (), None, 1, Routing.model_validate(routing))]
            l7_text = loopback_config(render_l7_config(spec, routes), dns.port, cert_dir)
            run = tmp_path / ("with-l4" if with_l4 else "l7-only")
            (run / "l7").mkdir(parents=True)
            with running_haproxy(l7_text, run / "l7", stats, l7_http) as l7_proxy:
                wait_until(lambda: l7_proxy.up_servers("t_git.tcp" + str(git.port)), 15, "the TCP backend UP",
                           every=0.05)  # fmt: skip
                if not with_l4:
                    answer = _raw_get("127.0.0.1", published)
                    assert b"200 OK" in answer and b'"git-ssh"' in answer, answer[:300]
                    assert git.requests[-1]["path"] == "/over-tcp"
                    continue
                # the L7 takes this port only from the L4, with its PROXY header
                assert b"200 OK" not in _try_raw_get("127.0.0.1", published, source=L4_NODE)
                assert b"200 OK" not in _try_raw_get("127.0.0.1", published, source=NOT_L4,
                                                     proxy_header="PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\n")
                l4_text = sent_from_l4_node(render_haproxy(
                    spec, [L4Backend("l7-node", "127.0.0.1", l7_https, l7_http)], bind="127.0.0.2",
                    http_port=l4_http, https_port=l4_https, runtime_dir=str(run)))  # fmt: skip
                (run / "l4").mkdir()
                with running_haproxy(l4_text, run / "l4", None, l4_http, address="127.0.0.2"):
                    wait_until(lambda p=published: b"200 OK" in _try_raw_get("127.0.0.2", p), 15 * LOADED,
                               "the service answering through the L4's TCP port", every=0.1)  # fmt: skip
                    answer = _raw_get("127.0.0.2", published, source="127.0.0.77")
                    assert b'"git-ssh"' in answer, answer[:300]
    finally:
        dns.close()
        git.close()


def _try_raw_get(address: str, port: int, source: str | None = None, proxy_header: str = "") -> bytes:
    try:
        return _raw_get(address, port, source, proxy_header)
    except OSError:
        return b""
