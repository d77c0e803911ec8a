"""The L7 renderer and component: every variant passes `haproxy -c`, and the mock engine sees the
swarm objects the issue asks for (hashed names, placement, host ports, update order, no secrets)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from components.model import EstateSpec, Route, Routing, format_violation, load_estate
from components.model.routes import template_slots
from components.render.l7 import (
    CERT_DIR,
    CONFIG_PATH,
    dns_payload_size,
    pickup_bound_ms,
    render_l7_config,
)
from tests.harness import schema
from tests.harness.l7 import (
    check_config,
    estate,
    route,
    self_signed_pem,
    synth_l7,
    unexpected_warnings,
)
from tests.harness.project import estate_of
from tools.synth import FakeEngine, RecordingMonitor, SynthResult


def stack_spec(stack: str) -> EstateSpec:
    return load_estate(estate_of(stack))


def routes_of(spec: EstateSpec) -> list[Route]:
    """Routes built by hand from the stack config's routing (the stacks layer adds the compose file's
    port and replicas; here every routed service of the example configs declares both or defaults)."""
    return [
        Route(stack, service, tuple(r.dns_names), r.http_port or 80, r.replicas or 1, r)
        for stack, s in spec.stacks.items()
        for service, r in s.services.items()
    ]


def many_routes(n: int) -> list[Route]:
    stickies = ["none", "cookie", "src"]
    balances = ["leastconn", "roundrobin", "source"]
    return [
        route(
            f"s{i:02d}",
            "web",
            [f"s{i:02d}.t.localhost", f"www.s{i:02d}.t.localhost"],
            8000 + i,
            1 + i % 4,
            check_uri="/health",
            sticky=stickies[i % 3],
            balance=balances[i % 3],
            rate_limit={"requests": 10 + i, "period": "10s"} if i % 5 == 0 else None,
            https_redirect=i % 7 != 0,
        )
        for i in range(n)
    ]


SELF_SIGNED = {"self_signed": True}
VARIANTS: dict[str, tuple[EstateSpec, list[Route]]] = {
    "prod": (stack_spec("prod"), routes_of(stack_spec("prod"))),
    "dev": (stack_spec("dev"), routes_of(stack_spec("dev"))),
    "0-routes": (estate(SELF_SIGNED), []),
    "1-route": (estate(SELF_SIGNED), [route("demo", "web", ["demo.t.localhost"], 8080)]),
    "50-routes": (estate({**SELF_SIGNED, "rate_limit": {"requests": 100}}), many_routes(50)),
    "50-routes-l4": (estate(SELF_SIGNED, l4=True), many_routes(50)),
    "sticky-cookie-insert": (
        estate(SELF_SIGNED),
        [route("a", "b", ["a.t.localhost"], 80, 2, check_uri="/", sticky="cookie")],
    ),
    "sticky-cookie-prefix": (
        estate(SELF_SIGNED),
        [route("a", "b", ["a.t.localhost"], 80, 2, check_uri="/", sticky="cookie", cookie_name="JSESSIONID")],
    ),
    "sticky-src": (estate(SELF_SIGNED), [route("a", "b", ["a.t.localhost"], 80, 2, check_uri="/", sticky="src")]),
    "sticky-src-rate-limited": (
        estate(SELF_SIGNED, l4=True),
        [
            route(
                "a",
                "b",
                ["a.t.localhost"],
                80,
                3,
                check_uri="/",
                sticky="src",
                rate_limit={"requests": 5, "period": "1m"},
            )
        ],
    ),
    "balance-source-get-check": (
        estate(SELF_SIGNED),
        [route("a", "b", ["a.t.localhost"], 80, 2, check_uri="/ping", check_method="GET", balance="source")],
    ),
    "no-tls": (estate(), [route("a", "b", ["a.t.localhost"], 80)]),
    "stats-off": (estate({**SELF_SIGNED, "stats": {"enabled": False}}), [route("a", "b", ["a.t.localhost"], 80)]),
    "stats-published": (
        estate({**SELF_SIGNED, "stats": {"publish": True, "port": 9000}}),
        [route("a", "b", ["a.t.localhost"], 80)],
    ),
    "slow-dns-hold": (
        estate({**SELF_SIGNED, "dns_hold_valid": "1m"}),
        [route("a", "b", ["a.t.localhost"], 80, 60, check_uri="/")],
    ),
    "http-and-tcp": (
        estate(SELF_SIGNED),
        [route("git", "git", ["git.t.localhost"], 3000, 2, check_uri="/", tcp=[{"port": 22, "published": 2222}])],
    ),
    "tcp-only-sticky-l4": (
        estate(SELF_SIGNED, l4=True),
        [Route("db", "pg", (), None, 3, Routing(tcp=[{"port": 5432, "published": 5432},  # type: ignore[list-item]
                                                     {"port": 5433, "published": 5433}], sticky="src"))],  # fmt: skip
    ),
}


# --- haproxy -c -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    self_signed_pem(directory, ["t.localhost", "*.t.localhost"])
    return directory


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_passes_haproxy_check(variant: str, cert_dir: Path, tmp_path: Path) -> None:
    """The rendered text as is, only the certificate directory pointed at a throwaway certificate.
    (At start-up HAProxy asks the host's resolver about every server slot, `init-addr libc`: the
    50-route variants take seconds where that resolver is slow.)"""
    spec, routes = VARIANTS[variant]
    result = check_config(render_l7_config(spec, routes).replace(f" crt {CERT_DIR}/ ", f" crt {cert_dir}/ "), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    assert unexpected_warnings(output) == []


# --- what the text says ---------------------------------------------------------------------


def backend_block(text: str, name: str) -> str:
    match = re.search(rf"^backend {re.escape(name)}\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S)
    assert match, f"no backend {name}"
    return match.group(1)


def test_seed_shape_of_a_backend() -> None:
    spec = stack_spec("prod")
    text = render_l7_config(spec, routes_of(spec))
    ui = backend_block(text, "conductor_conductor-ui")
    assert "    balance leastconn\n" in ui
    assert "    http-check send meth HEAD uri / ver HTTP/1.1 hdr Host conductor.d4science.org\n" in ui
    assert "    http-check expect rstatus (2|3)[0-9][0-9]\n" in ui
    assert "    cookie JSESSIONID prefix nocache dynamic\n" in ui
    assert re.search(r"^    dynamic-cookie-key \S+$", ui, flags=re.M)
    assert (
        "    server-template conductor-ui- 10 conductor_conductor-ui:5000 check inter 2s rise 2 fall 3 "
        "resolvers docker resolve-prefer ipv4 init-addr libc,none\n"
    ) in ui
    shiny = backend_block(text, "shinyproxy_shinyproxy")
    assert "    stick-table type ip size 2m expire 180m\n    stick on src\n" in shiny
    assert "    nameserver dns1 127.0.0.11:53\n" in text
    assert '    http-response set-header Strict-Transport-Security "max-age=63072000" if { ssl_fc }\n' in text
    assert "    redirect scheme https code 301 if !{ ssl_fc }\n" in text
    # the default rate limit of the prod model applies to every backend, each with its own table
    for r in routes_of(spec):
        block = backend_block(text, r.swarm_service)
        assert f"sc_http_req_rate(1,{r.swarm_service}.rate) gt 200" in block
        assert "store http_req_rate(10s)" in backend_block(text, f"{r.swarm_service}.rate")


@pytest.mark.parametrize("l4", [False, True])
def test_a_proxy_header_is_taken_only_from_the_l4_and_only_when_it_is_in_front(l4: bool) -> None:
    spec = estate(SELF_SIGNED, l4=l4, stacks={"a": {"compose": "x", "services": {"b": {"tcp": [
        {"port": 22, "published": 2222}]}}}})  # fmt: skip
    routing = Routing.model_validate({"dns_names": ["a.t.localhost"], "tcp": [{"port": 22, "published": 2222}]})
    text = render_l7_config(spec, [Route("a", "b", ("a.t.localhost",), 80, 1, routing)])
    assert "accept-proxy" not in text  # a PROXY header from anyone would be trusted
    guard = ["    tcp-request connection reject if !{ src 172.28.0.5 172.28.0.6 172.28.0.7 }",
             "    tcp-request connection expect-proxy layer4"]  # fmt: skip
    for frontend in ("http", "tcp2222"):
        block = re.search(rf"^frontend {frontend}\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S)
        assert block
        lines = block.group(1).splitlines()
        assert all((line in lines) == l4 for line in guard), frontend
        if l4:
            assert lines.index(guard[0]) < lines.index(guard[1])  # the peer is checked before a header is read
    stats = re.search(r"^frontend stats\n(.*?)(?=^\S|\Z)", text, flags=re.M | re.S)
    assert stats and "tcp-request" not in stats.group(1)


def test_zero_routes_answer_only_the_default() -> None:
    text = render_l7_config(estate(SELF_SIGNED), [])
    assert re.findall(r"^backend (\S+)", text, flags=re.M) == ["unknown-host"]
    assert "use_backend" not in text
    assert "    default_backend unknown-host\n" in text
    assert "http-request return status 404" in backend_block(text, "unknown-host")


def test_fifty_routes_one_backend_each_in_stable_order() -> None:
    routes = many_routes(50)
    text = render_l7_config(estate(SELF_SIGNED), routes)
    shuffled = routes[:]
    random.Random(7).shuffle(shuffled)
    assert render_l7_config(estate(SELF_SIGNED), shuffled) == text
    assert len(re.findall(r"^    use_backend ", text, flags=re.M)) == 50
    assert len(re.findall(r"^    server-template ", text, flags=re.M)) == 50
    assert len(re.findall(r"^    acl host\.", text, flags=re.M)) == 100  # one per public name


def test_server_slots_leave_room_for_a_rolling_update_in_steps_of_ten() -> None:
    # at least twice the replicas (a start-first roll of the whole service), in steps of ten so that
    # scaling within a step leaves the L7 config alone
    assert [template_slots(n) for n in (1, 2, 3, 5, 6, 10, 11)] == [10, 10, 10, 10, 20, 20, 30]
    text = render_l7_config(estate(SELF_SIGNED), [route("a", "b", ["a.t.localhost"], 80, 7, check_uri="/")])
    assert "server-template b- 20 a_b:80 " in text


def test_dns_payload_fits_the_largest_backend() -> None:
    assert dns_payload_size([]) == 1232
    big = route("a", "b", ["a.t.localhost"], 80, 100, check_uri="/")
    # 200 slots x 16 bytes of A record + header, question and OPT
    assert dns_payload_size([big]) == 12 + len("a_b") + 6 + 16 * 200 + 11
    assert f"accepted_payload_size {dns_payload_size([big])}" in render_l7_config(estate(SELF_SIGNED), [big])


def test_pickup_bound_follows_the_model() -> None:
    assert pickup_bound_ms(estate()) == 3000  # hold valid 2s + one retried query
    spec = estate({"dns_hold_valid": "500ms"})
    assert pickup_bound_ms(spec) == 1500
    text = render_l7_config(spec, [])
    assert "    timeout resolve 500ms\n" in text
    assert "in rotation within 1.5s" in text


def test_per_service_rate_limit_overrides_the_default() -> None:
    spec = estate({**SELF_SIGNED, "rate_limit": {"requests": 100, "period": "10s"}})
    own = route("a", "own", ["own.t.localhost"], 80, rate_limit={"requests": 5, "period": "1m"})
    default = route("a", "default", ["default.t.localhost"], 80)
    text = render_l7_config(spec, [own, default])
    assert "gt 5 }" in backend_block(text, "a_own")
    assert "store http_req_rate(1m)" in backend_block(text, "a_own.rate")
    assert "gt 100 }" in backend_block(text, "a_default")
    unlimited = render_l7_config(estate(SELF_SIGNED), [default])
    assert "track-sc" not in unlimited and "429" not in unlimited


def test_https_redirect_opt_out() -> None:
    routes = [
        route("a", "legacy", ["legacy.t.localhost", "old.t.localhost"], 80, https_redirect=False),
        route("a", "web", ["web.t.localhost"], 80),
    ]
    text = render_l7_config(estate(SELF_SIGNED), routes)
    plain = re.findall(r"^    acl plain_http_ok req\.hdr\(host\),field\(1,:\) -m str -i (\S+)$", text, flags=re.M)
    assert plain == ["legacy.t.localhost", "old.t.localhost"]
    assert "    redirect scheme https code 301 if !{ ssl_fc } !plain_http_ok\n" in text


def test_without_certificates_only_plain_http_is_served() -> None:
    text = render_l7_config(estate(), [route("a", "b", ["a.t.localhost"], 80)])
    assert " ssl crt " not in text
    assert "redirect scheme" not in text and "Strict-Transport-Security" not in text


def test_a_name_routed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="x.t.localhost is routed to both a_b and c_d"):
        render_l7_config(estate(), [route("a", "b", ["x.t.localhost"], 80), route("c", "d", ["x.t.localhost"], 80)])


# --- the component under the mock engine ----------------------------------------------------

FAKE_PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIFAKECERTIFICATEBODYfor-tests-only\n-----END CERTIFICATE-----\n"
    "-----BEGIN PRIVATE KEY-----\nMIIFAKEPRIVATEKEYMATERIAL-must-never-leak\n-----END PRIVATE KEY-----\n"
)
CONFIG = "docker:index/serviceConfig:ServiceConfig"
SECRET = "docker:index/secret:Secret"
SERVICE = "docker:index/service:Service"


def leaks(result: SynthResult, secret: str) -> list[str]:
    """Forms in which `secret` (or its key) shows up anywhere in what the synth would write."""
    text = json.dumps(result.resources) + json.dumps(result.outputs) + json.dumps(result.files)
    key = secret.split("-----BEGIN PRIVATE KEY-----")[-1].split("-----END")[0].strip()
    forms = {"pem": secret, "key": key, "base64": base64.b64encode(secret.encode()).decode()}
    return [name for name, form in forms.items() if form and form in text]


def one(result: SynthResult, typ: str) -> dict[str, Any]:
    (found,) = result.by_type(typ)
    return found


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def prod() -> SynthResult:
    spec = stack_spec("prod")
    return synth_l7(spec, routes_of(spec), {"tlsWildcardPem": FAKE_PEM})


def test_prod_config_is_hashed_and_identical_to_the_published_file(prod: SynthResult) -> None:
    spec = stack_spec("prod")
    published = prod.files["l7/haproxy.cfg"]
    assert published == render_l7_config(spec, routes_of(spec))
    config = one(prod, CONFIG)
    # the content's hash names the swarm config and the Pulumi resource: a new content is a new resource
    assert config["inputs"]["name"] == f"l7_haproxy.cfg-{sha12(published)}"
    assert config["name"] == f"l7-config-{sha12(published)}"
    assert base64.b64decode(config["inputs"]["data"]).decode() == published
    service = one(prod, SERVICE)
    (mounted,) = service["inputs"]["taskSpec"]["containerSpec"]["configs"]
    assert mounted == {
        "configId": f"{config['name']}-id", "configName": config["inputs"]["name"], "fileName": CONFIG_PATH,
    }
    assert prod.outputs == {"config_name": config["inputs"]["name"], "service_name": "l7_haproxy"}


def test_each_tcp_route_is_published_in_host_mode_on_the_l7_nodes() -> None:
    routing = {"tcp": [{"port": 22, "published": 2222}]}
    spec = estate(SELF_SIGNED, stacks={"git": {"compose": "unused.yml", "services": {"git": routing}}})
    result = synth_l7(spec, [Route("git", "git", (), None, 1, Routing.model_validate(routing))], {})
    ports = {p["name"]: p for p in one(result, SERVICE)["inputs"]["endpointSpec"]["ports"]}
    assert sorted(ports) == ["http", "https", "tcp2222"]
    assert ports["tcp2222"] == {"name": "tcp2222", "targetPort": 2222, "publishedPort": 2222, "protocol": "tcp",
                                "publishMode": "host"}  # fmt: skip


def test_prod_service_placement_ports_and_rollout(prod: SynthResult) -> None:
    inputs = one(prod, SERVICE)["inputs"]
    assert inputs["mode"] == {"replicated": {"replicas": 3}}
    assert inputs["taskSpec"]["placement"] == {"constraints": ["node.labels.l7==true"], "maxReplicas": 1}
    assert inputs["taskSpec"]["containerSpec"]["image"] == "haproxy:3.0"
    ports = {p["targetPort"]: p for p in inputs["endpointSpec"]["ports"]}
    assert sorted(ports) == [80, 443]
    assert all(p["publishMode"] == "host" and p["publishedPort"] == p["targetPort"] for p in ports.values())
    assert inputs["updateConfig"] == {
        "parallelism": 1,
        "delay": "10s",
        "order": "stop-first",
        "failureAction": "rollback",
        "monitor": "10s",
    }
    assert inputs["rollbackConfig"]["order"] == "stop-first"
    assert set(inputs["convergeConfig"]) == {"delay", "timeout"}
    assert inputs["taskSpec"]["restartPolicy"]["condition"] == "any"
    assert inputs["taskSpec"]["containerSpec"]["healthcheck"]["tests"][0] == "CMD-SHELL"
    assert inputs["taskSpec"]["networksAdvanceds"] == [{"id": "haproxy-public-id"}]
    service = one(prod, SERVICE)
    assert (service["parent"], service["provider"]) == ("l7", "swarm")


def test_prod_certificate_is_a_secret_the_provider_names_never_in_plain_text(prod: SynthResult) -> None:
    secret = one(prod, SECRET)
    assert secret["inputs"]["data"] == "[secret]"
    # no name of the program's: nothing derived from the key is in a name; the provider appends a random part
    assert "name" not in secret["inputs"] and secret["name"] == "l7_d4science-wildcard"
    (mounted,) = one(prod, SERVICE)["inputs"]["taskSpec"]["containerSpec"]["secrets"]
    assert mounted["fileName"] == "/usr/local/etc/haproxy/certs/d4science-wildcard.pem"
    assert mounted["secretName"] == "<mock:l7_d4science-wildcard.name>"  # the provider's name, not a secret
    assert leaks(prod, FAKE_PEM) == []


def test_the_config_is_a_new_resource_exactly_when_its_content_changes_and_the_secret_follows_its_pem() -> None:
    spec = stack_spec("prod")
    routes = routes_of(spec)

    def observed(routes: list[Route], pem: str) -> tuple[str, str, str]:
        monitor = RecordingMonitor(FakeEngine())
        result = synth_l7(spec, routes, {"tlsWildcardPem": pem}, monitor=monitor)
        (request,) = [r for r in monitor.requests if r.type == SECRET]
        data = json_format.MessageToDict(request.object)["data"]["value"]  # unwrapped from its secret
        return one(result, CONFIG)["name"], one(result, CONFIG)["inputs"]["name"], data

    resource, config, data = observed(routes, FAKE_PEM)
    assert observed(list(reversed(routes)), FAKE_PEM) == (resource, config, data)  # same content, same names
    more = [*routes, route("extra", "web", ["extra.d4science.org"], 8080)]
    new_resource, new_config, same_data = observed(more, FAKE_PEM)
    assert new_resource != resource and new_config != config and same_data == data
    same_resource, same_config, new_data = observed(routes, FAKE_PEM.replace("must-never-leak", "rotated"))
    # a new PEM is new data on the same resource: the provider replaces it, create-before-delete
    assert (same_resource, same_config) == (resource, config) and new_data != data


def test_dev_generates_its_certificate_once_as_a_secret() -> None:
    spec = stack_spec("dev")
    monitor = RecordingMonitor(FakeEngine())
    result = synth_l7(spec, routes_of(spec), {}, monitor=monitor)
    generator = one(result, "command:local:Command")
    assert "openssl req -x509" in generator["inputs"]["create"]
    assert "DNS:dev.localhost,DNS:*.dev.localhost" in generator["inputs"]["create"]
    assert "update" not in generator["inputs"]  # runs on create only: stable across `pulumi up`s
    assert generator["inputs"]["logging"] == "none"  # the key never reaches the console
    (request,) = [r for r in monitor.requests if r.type == "command:local:Command"]
    assert list(request.additionalSecretOutputs) == ["stdout"]
    secret = one(result, SECRET)
    assert secret["inputs"]["data"] == "[secret]"
    assert secret["name"] == "l7_self-signed" and "name" not in secret["inputs"]
    assert "l7-self-signed" in secret["dependencies"]
    assert one(result, SERVICE)["inputs"]["mode"] == {"replicated": {"replicas": 2}}
    assert leaks(result, "<mock:l7-self-signed.stdout>") == []  # the (mock) generated PEM


def test_update_delay_shorter_than_the_l4_checks_is_flagged() -> None:
    def warned(spec: EstateSpec) -> list[str]:
        return [format_violation(w) for w in spec.warnings if w.path == ("l7", "update_delay")]

    assert warned(estate({"update_delay": "1s"})) == []  # no L4 pair: nothing to wait for
    assert warned(estate({"update_delay": "10s"}, l4=True)) == []  # L4 default: 1s x (1+1)
    (warning,) = warned(estate({"update_delay": "2s"}, l4=True))
    assert warning.startswith("swarm-estate:estate.l7.update_delay: 2s is not longer than the 2000 ms")


@pytest.mark.skipif(not schema.available(), reason="provider schemas (../shared/provider-schemas) not present")
def test_l7_resources_match_the_provider_schemas(prod: SynthResult) -> None:
    dev_spec = stack_spec("dev")
    dev = synth_l7(dev_spec, routes_of(dev_spec), {})
    assert [p for r in prod.resources + dev.resources for p in schema.problems(r)] == []
