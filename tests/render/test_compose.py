"""Compose import checked against the reference: `docker stack config -c` (the real Docker CLI).

Each file is imported by `components.compose.parse` and normalised by Docker; both are projected
onto one canonical shape (units as the Swarm API counts them) and compared. Cases in
tests/compose_cases/ say whether Docker agrees (`same`), refuses the file too (`rejects`) or
accepts what the import deliberately refuses (`accepts`), and which errors/warnings to expect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.compose.apply import import_stacks, routes_of
from components.compose.parse import parse_compose
from components.model import EstateConfigError, load_estate
from components.platform_stacks import platform_stacks
from components.prepare import prepare
from components.units import go_duration, parse_bytes, parse_duration, service_duration
from tests.harness.compose import assert_same_as_docker, docker_stack_config
from tests.harness.project import COMPOSE_CASES, ROOT, estate_of

CASE_NAMES = sorted(p.name for p in COMPOSE_CASES.iterdir() if (p / "expect.yml").exists())
STACK_FILES = sorted((ROOT / "stacks").glob("*/docker-compose.yml"))


# --- the files in stacks/ --------------------------------------------------------------------------


def _variables_for(compose: Path) -> dict[str, str]:
    rel = str(compose.relative_to(ROOT))
    for env in ("prod", "dev"):
        for stack in estate_of(env).get("stacks", {}).values():
            if stack["compose"] == rel:
                return {k: str(v) for k, v in (stack.get("variables") or {}).items()}
    return {}


def test_every_stack_file_is_used_by_an_example_config():
    used = {s["compose"] for env in ("prod", "dev") for s in estate_of(env)["stacks"].values()}
    assert {str(p.relative_to(ROOT)) for p in STACK_FILES} == used


@pytest.mark.parametrize("compose", STACK_FILES, ids=lambda p: p.parent.name)
def test_stack_file_imports_like_docker_stack_config(compose: Path):
    variables = _variables_for(compose)
    model, problems = parse_compose(compose.read_text(), compose.name, compose.parent, variables)
    assert problems == []
    assert model.services
    assert_same_as_docker(compose, variables, model)


# --- tricky cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_NAMES)
def test_compose_case(case: str):
    folder = COMPOSE_CASES / case
    expect = yaml.safe_load((folder / "expect.yml").read_text())
    variables = {k: str(v) for k, v in (expect.get("variables") or {}).items()}
    compose = folder / "docker-compose.yml"
    model, problems = parse_compose(compose.read_text(), f"{case}/docker-compose.yml", folder, variables)

    for wanted in expect.get("errors") or []:
        assert any(p.startswith(wanted) for p in problems), f"expected an error starting {wanted!r}, got {problems}"
    assert len(problems) == len(expect.get("errors") or []), problems
    if "warnings" in expect:
        assert list(model.warnings) == expect["warnings"]
    for key, content in (expect.get("configs") or {}).items():
        assert model.configs[key].content == content

    rc, _, stderr = docker_stack_config(compose, variables)
    verdict = expect["docker"]
    if verdict == "same":
        assert not problems
        assert_same_as_docker(compose, variables, model)
    elif verdict == "rejects":
        assert rc != 0, "docker stack config accepted a file the case says it refuses"
    else:
        assert verdict == "accepts" and rc == 0, stderr
        assert problems, "the import must refuse what this case documents as refused"


def test_unset_variable_without_default_names_file_service_and_key(tmp_path: Path):
    (tmp_path / "c.yml").write_text("services:\n  web:\n    image: x\n    hostname: ${HOST}\n")
    _, problems = parse_compose((tmp_path / "c.yml").read_text(), "c.yml", tmp_path, {})
    assert problems == [
        "c.yml: service web: hostname: variable HOST is not set: add it to the stack's `variables`, "
        "or write ${HOST:-default}"
    ]


@pytest.mark.parametrize(
    ("text", "ns", "go"),
    [("1m30s", 90 * 10**9, "1m30s"), ("120s", 120 * 10**9, "2m0s"), ("500ms", 5 * 10**8, "500ms"),
     ("1h", 3600 * 10**9, "1h0m0s"), ("1.5s", 15 * 10**8, "1.5s"), ("0", 0, "0s")],
)  # fmt: skip
def test_durations_follow_go(text: str, ns: int, go: str):
    assert parse_duration(text) == ns
    assert go_duration(ns) == go


@pytest.mark.parametrize(
    ("text", "provider"),
    [("120s", "2m"), ("2m0s", "2m"), ("90s", "1m30s"), ("1h", "1h"), ("3600s", "1h"), ("1h30m", "1h30m"),
     ("3601s", "1h0m1s"), ("30s", "30s"), ("500ms", "500ms")],
)  # fmt: skip
def test_service_durations_are_spelt_as_the_provider_reads_them_back(text: str, provider: str):
    """kreuzwerker's shortDur (resource_docker_service_structures.go): Go's text without a trailing 0s or 0m."""
    assert service_duration(parse_duration(text)) == provider


def test_days_are_not_go():
    """Compose files follow Go, which has no `d`; only the model's HAProxy-format durations take days."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("1d")
    assert parse_duration("1d", days=True) == 86_400 * 10**9


def test_sizes_are_binary_multiples_like_docker():
    assert parse_bytes("50M") == 52428800
    assert parse_bytes("1G") == 1073741824
    assert parse_bytes("512k") == 524288
    assert parse_bytes("1GiB") == 1073741824
    with pytest.raises(ValueError):
        parse_bytes("lots")


# --- the estate applied: import_stacks and routes ------------------------------------------------


def test_prod_imports_with_its_routing():
    spec = load_estate(estate_of("prod"))
    stacks = import_stacks(spec, ROOT)
    assert set(stacks) == {"conductor", "shinyproxy", "stager"}
    got = {(r.swarm_service, r.port, r.replicas, r.dns_names) for r in prepare(estate_of("prod"), ROOT, "prod").routes}
    assert got == {
        ("conductor_conductor-ui", 5000, 2, ("conductor.d4science.org",)),
        ("conductor_conductor-server", 8080, 2, ("conductor-api.d4science.org",)),
        ("shinyproxy_shinyproxy", 8080, 2, ("shinyproxy.d4science.org",)),
        ("stager_ui", 3080, 1, ("stager.d4science.org",)),
        ("registry_registry", 5000, 1, ("docker-registry.d4science.org",)),
        ("portainer_portainer", 9000, 1, ("portainer.d4science.org",)),
    }
    ui = stacks["stager"].services["ui"]
    assert ui.endpoint_mode == "dnsrr" and ui.ports == () and "haproxy-public" in ui.networks
    assert stacks["stager"].volumes["stager-data"].nfs is not None
    assert stacks["stager"].volumes["stager-data"].nfs.device == ":/export/docker/data/stager"
    assert any("Ignoring unsupported options: depends_on" in w for w in stacks["stager"].warnings)
    # the unrouted stager service keeps its published port and its VIP
    assert stacks["stager"].services["service"].ports[0].published == 3100


def test_dev_demo_takes_its_image_from_a_variable(tmp_path: Path):
    raw = estate_of("dev")
    raw["stacks"]["demo"]["variables"] = {"DEMO_IMAGE": "swarm-estate/busybox:test"}
    spec = load_estate(raw)
    demo = import_stacks(spec, ROOT)["demo"]
    assert demo.services["web"].image == "swarm-estate/busybox:test"
    (route,) = prepare(raw, ROOT, "dev").routes
    assert (route.swarm_service, route.port, route.replicas, route.routing.check_uri) == (
        "demo_web",
        8080,
        2,
        "/health",
    )


def _project(tmp_path: Path, compose: str, files: dict[str, str] | None = None) -> Path:
    (tmp_path / "stacks" / "app").mkdir(parents=True)
    (tmp_path / "stacks" / "app" / "docker-compose.yml").write_text(compose)
    for name, text in (files or {}).items():
        (tmp_path / "stacks" / "app" / name).write_text(text)
    return tmp_path


def _estate(stack: dict[str, Any]) -> dict[str, Any]:
    raw = estate_of("dev")
    raw["stacks"] = {"app": {"compose": "stacks/app/docker-compose.yml", **stack}}
    return raw


def _problems(raw: dict[str, Any], project: Path) -> list[str]:
    with pytest.raises(EstateConfigError) as info:
        import_stacks(load_estate(raw), project)
    return info.value.problems


WEB3 = "services:\n  web:\n    image: nginx\n    deploy: {replicas: 3}\n"


def test_compose_replicas_make_check_uri_mandatory(tmp_path: Path):
    project = _project(tmp_path, WEB3)
    raw = _estate({"services": {"web": {"dns_names": ["app.dev.localhost"], "http_port": 80}}})
    with pytest.raises(EstateConfigError) as info:
        prepare(raw, project, "dev")
    assert info.value.problems == [
        "swarm-estate:estate.stacks.app.services.web.check_uri: 3 replicas (from stacks/app/docker-compose.yml) "
        "need a health-check URI, or HAProxy keeps sending requests to a replica that is down"
    ]


def test_port_comes_from_compose_or_config_or_is_an_error(tmp_path: Path):
    project = _project(
        tmp_path, "services:\n  web:\n    image: nginx\n    ports: ['8081:80']\n  api:\n    image: api\n"
    )
    raw = _estate(
        {"services": {"web": {"dns_names": ["web.dev.localhost"]}, "api": {"dns_names": ["api.dev.localhost"]}}}
    )
    assert _problems(raw, project) == [
        "swarm-estate:estate.stacks.app.services.api.http_port: give the HTTP port: "
        "stacks/app/docker-compose.yml publishes no port for api"
    ]
    raw["stacks"]["app"]["services"]["api"]["http_port"] = 3000
    stacks = import_stacks(load_estate(raw), project)
    web = stacks["app"].services["web"]
    assert (web.route_port, web.ports, web.endpoint_mode) == (80, (), "dnsrr")
    assert "web: 8081:80/tcp is not published: the L7 serves it as web.dev.localhost" in stacks["app"].notes


def test_stack_config_problems_name_config_paths_all_at_once(tmp_path: Path):
    project = _project(tmp_path, "services:\n  web:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token: {}\n")
    raw = _estate(
        {
            "services": {"wbe": {"dns_names": ["web.dev.localhost"], "http_port": 80}},
            "volumes": {"data": {"nfs": "docker"}},
        }
    )
    raw["nfs"] = {"exports": [{"name": "docker", "server": "10.0.0.9", "path": "/export"}]}
    assert _problems(raw, project) == [
        "swarm-estate:estate.stacks.app.services.wbe: stacks/app/docker-compose.yml has no service 'wbe' (it has web)",
        "swarm-estate:estate.stacks.app.volumes.data: stacks/app/docker-compose.yml declares no volume 'data'",
        "swarm-estate:estate.stacks.app.secrets: stacks/app/docker-compose.yml secret 'token' has no content: map it "
        "to a secret config key here (pulumi config set --secret …)",
    ]


def test_missing_compose_file_and_unknown_external_network(tmp_path: Path):
    project = _project(
        tmp_path, "services:\n  web:\n    image: nginx\n    networks: [ext]\nnetworks:\n  ext: {external: true}\n"
    )
    raw = _estate({})
    raw["stacks"]["gone"] = {"compose": "stacks/gone/docker-compose.yml"}
    problems = _problems(raw, project)
    assert any(
        p.startswith("stacks/app/docker-compose.yml: networks.ext: external network 'ext' is not one") for p in problems
    )
    assert any(
        p.startswith("swarm-estate:estate.stacks.gone.compose: cannot read stacks/gone/docker-compose.yml")
        for p in problems
    )


def test_secret_from_stack_config_and_outside_domain_warning(tmp_path: Path):
    project = _project(tmp_path, "services:\n  web:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token: {}\n")
    raw = _estate(
        {"secrets": {"token": "appToken"}, "services": {"web": {"dns_names": ["www.example.com"], "http_port": 80}}}
    )
    prepared = prepare(raw, project, "dev")
    assert prepared.stacks["app"].secrets["token"].config_key == "appToken"
    assert (
        "swarm-estate:estate.stacks.app.services.web.dns_names[0]: www.example.com is outside dev.localhost: "
        "set _acme-challenge.www.example.com as a CNAME into dev.localhost's ACME zone, or no valid certificate "
        "can be issued"
    ) in prepared.warnings


def test_platform_stack_names_are_reserved_when_enabled():
    raw = estate_of("prod")
    raw["stacks"]["registry"] = raw["stacks"].pop("stager")
    problems = _problems(raw, ROOT)
    assert problems == [
        "swarm-estate:estate.stacks.registry: the name 'registry' belongs to the enabled platform stack"
    ]


def test_platform_stacks_follow_the_model():
    spec = load_estate(estate_of("prod"))
    stacks = platform_stacks(spec)
    registry = stacks["registry"]
    assert registry.volumes["data"].nfs is not None
    assert registry.volumes["data"].nfs.device == ":/export/docker/registry"
    assert registry.secrets["htpasswd"].config_key == "registryHtpasswd"
    agent, server = stacks["portainer"].services["agent"], stacks["portainer"].services["portainer"]
    assert agent.mode == "global" and "node.role == manager" in server.constraints
    assert [r.swarm_service for r in routes_of(spec, stacks)] == ["registry_registry", "portainer_portainer"]
    dev = load_estate(estate_of("dev"))
    assert platform_stacks(dev) == {}


def test_file_problems_name_the_project_relative_file(tmp_path: Path):
    project = _project(tmp_path, "services:\n  web:\n    image: nginx\n    ulimits: {nproc: 10}\n")
    (problem,) = _problems(_estate({}), project)
    assert problem.startswith("stacks/app/docker-compose.yml: service web: ulimits: Swarm supports it")


def test_data_kept_on_removal_even_when_asked_otherwise_is_a_warning(tmp_path: Path):
    project = _project(tmp_path, "services:\n  db:\n    image: redis\n    volumes: [data:/data]\nvolumes:\n  data:\n")
    raw = _estate({"volumes": {"data": {"nfs": "docker", "subpath": "db", "keep_on_removal": False}}})
    raw["nfs"] = {"exports": [{"name": "docker", "server": "10.0.0.9", "path": "/export"}]}
    stack = import_stacks(load_estate(raw), project)["app"]
    assert stack.volumes["data"].nfs is not None and stack.volumes["data"].nfs.device == ":/export/db"
    assert stack.warnings == (
        "swarm-estate:estate.stacks.app.volumes.data.keep_on_removal: swarm-estate never deletes NFS data; "
        "removing the stack leaves /export/db on 10.0.0.9 for you to delete",
    )


def test_names_swarm_would_refuse_are_errors(tmp_path: Path):
    long = "a-really-long-service-name-that-keeps-going-and-going-on-and-on"
    project = _project(
        tmp_path, f"services:\n  {long}:\n    image: nginx\n    configs: [c]\nconfigs:\n  c:\n    content: x\n"
    )
    problems = _problems(_estate({}), project)
    assert problems == [
        f"stacks/app/docker-compose.yml: service {long}: the Swarm service name 'app_{long}' must be at most 63 "
        "letters, digits, '-', '_' or '.'"
    ]


def test_stack_config_secret_wins_over_an_external_one(tmp_path: Path):
    compose = "services:\n  web:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token: {external: true}\n"
    project = _project(tmp_path, compose)
    assert _problems(_estate({}), project) == [
        "stacks/app/docker-compose.yml: service web: secrets: 'token' is external, but a service needs its Swarm id, "
        "which only Pulumi-managed objects have: map it to a secret config key, "
        "swarm-estate:estate.stacks.app.secrets.token: <key>, and `pulumi config set --secret <key>`"
    ]
    stack = import_stacks(load_estate(_estate({"secrets": {"token": "appToken"}})), project)["app"]
    assert (stack.secrets["token"].config_key, stack.secrets["token"].external) == ("appToken", False)


def test_a_private_network_may_not_take_a_shared_overlays_name(tmp_path: Path):
    project = _project(
        tmp_path, "services:\n  web:\n    image: nginx\n    networks: [haproxy-public]\nnetworks:\n  haproxy-public:\n"
    )
    assert _problems(_estate({}), project) == [
        "stacks/app/docker-compose.yml: networks.haproxy-public: haproxy-public is one of the estate's shared "
        "overlays: declare it external: true"
    ]


# --- the estate around the stacks: log drivers, ports, one pass, names ---------------------------


def _stacks_project(tmp_path: Path, files: dict[str, str]) -> Path:
    for stack, compose in files.items():
        (tmp_path / "stacks" / stack).mkdir(parents=True)
        (tmp_path / "stacks" / stack / "docker-compose.yml").write_text(compose)
    return tmp_path


def _prepare_problems(raw: dict[str, Any], project: Path) -> list[str]:
    with pytest.raises(EstateConfigError) as info:
        prepare(raw, project, "dev")
    return info.value.problems


LOG_ANCHOR = (
    "x-logging: &logging\n  logging:\n    options: {max-size: 10m, max-file: '3'}\n"
    "services:\n  web:\n    <<: *logging\n    image: nginx\n"
)


def test_logging_without_a_driver_takes_the_engines_and_says_so(tmp_path: Path):
    project = _project(tmp_path, LOG_ANCHOR)
    stack = prepare(_estate({}), project, "dev").stacks["app"]  # dev: docker-in-docker nodes, dockerd's json-file
    logging = stack.services["web"].logging
    assert logging is not None
    assert (logging.driver, logging.options) == ("json-file", {"max-size": "10m", "max-file": "3"})
    assert "web: logging names no driver: the engines' default, json-file, as Docker would use" in stack.notes


def test_log_options_the_engines_driver_refuses_are_an_error_before_any_task_fails(tmp_path: Path):
    """The prod engines log to journald, which has no max-size: Docker would fail every task at start."""
    project = _project(tmp_path, LOG_ANCHOR)
    raw = estate_of("prod")
    raw["stacks"] = {"app": {"compose": "stacks/app/docker-compose.yml"}}
    assert _prepare_problems(raw, project) == [
        "stacks/app/docker-compose.yml: service web: logging.options: max-file, max-size: the journald log driver "
        "(no driver is named, so the engines' default: swarm-estate:estate.engine.log_driver) has no such option, "
        "and every task would fail to start; name the driver the options are for (e.g. driver: json-file)"
    ]
    raw["engine"] = {"log_driver": "local"}
    assert prepare(raw, project, "prod").stacks["app"].services["web"].logging.driver == "local"  # type: ignore[union-attr]


def test_engine_log_options_are_checked_against_the_engines_driver():
    raw = estate_of("prod")
    raw["engine"] = {"log_driver": "journald", "log_opts": {"max-size": "10m"}}
    with pytest.raises(EstateConfigError) as info:
        load_estate(raw)
    assert any(p.startswith("swarm-estate:estate.engine: ") and "max-size: the journald log driver has no such"
               in p for p in info.value.problems), info.value.problems  # fmt: skip


def test_one_run_reports_every_files_problems_and_the_estate_checks_of_all(tmp_path: Path):
    project = _stacks_project(tmp_path, {
        "broken": "services:\n  web:\n    image: nginx\n    tty: true\n    ports: ['8080:80']\n",
        "other": "services:\n  api:\n    image: api\n    networks: [elsewhere]\n    ports: ['8080:80']\n"
                 "networks:\n  elsewhere: {external: true}\n",
    })  # fmt: skip
    raw = estate_of("dev")
    raw["stacks"] = {s: {"compose": f"stacks/{s}/docker-compose.yml"} for s in ("broken", "other")}
    problems = _prepare_problems(raw, project)
    assert any(p.startswith("stacks/broken/docker-compose.yml: service web: tty: Swarm supports it") for p in problems)
    assert any(p.startswith("stacks/other/docker-compose.yml: networks.elsewhere: external network 'elsewhere'")
               for p in problems)  # fmt: skip
    # the port check ran over both files, the broken one included, and names both owners
    assert (
        "stacks/other/docker-compose.yml: service api: ports: 8080/tcp (ingress mode) is also published by "
        "stacks/broken/docker-compose.yml: service web as 8080/tcp (ingress mode): a port in ingress mode is taken "
        "on every node, so Swarm refuses the second"
    ) in problems
    assert len(problems) == 3, problems


def test_a_port_the_l7_or_the_swarm_holds_is_refused_naming_both(tmp_path: Path):
    project = _stacks_project(tmp_path, {
        "app": "services:\n  web:\n    image: nginx\n    ports: ['80:8080', '2377:2377']\n"
               "  agent:\n    image: agent\n    ports: [{target: 9001, published: 8443, mode: host}]\n",
    })  # fmt: skip
    raw = estate_of("dev")
    raw["stacks"] = {"app": {"compose": "stacks/app/docker-compose.yml"}}
    raw["l7"] = {**raw.get("l7", {}), "https_port": 8443}
    assert _prepare_problems(raw, project) == [
        "stacks/app/docker-compose.yml: service web: ports: 80/tcp (ingress mode) clashes with the L7 HTTP port "
        "(swarm-estate:estate.l7.http_port), which the L7 publishes in host mode on its nodes: ingress mode "
        "publishes it on every node, the L7 nodes included; publish another port, or route the service through "
        "the L7",
        "stacks/app/docker-compose.yml: service web: ports: 2377/tcp (ingress mode) is swarm management (2377/tcp), "
        "which every node needs for the swarm itself; publish another port",
        "stacks/app/docker-compose.yml: service agent: ports: 8443/tcp (host mode) clashes with the L7 HTTPS port "
        "(swarm-estate:estate.l7.https_port), which the L7 publishes in host mode on its nodes: host mode would "
        "take it on any L7 node a task lands on; publish another port, or route the service through the L7",
    ]


def test_two_stacks_in_host_mode_on_one_port_are_a_warning(tmp_path: Path):
    host = "services:\n  agent:\n    image: agent\n    ports: [{target: 9100, published: 9100, mode: host}]\n"
    project = _stacks_project(tmp_path, {"a": host, "b": host})
    raw = estate_of("dev")
    raw["stacks"] = {s: {"compose": f"stacks/{s}/docker-compose.yml"} for s in ("a", "b")}
    warnings = prepare(raw, project, "dev").warnings
    assert any(w.startswith("stacks/b/docker-compose.yml: service agent: ports: 9100/tcp (host mode) is also "
                            "published by stacks/a/docker-compose.yml: service agent as 9100/tcp (host mode): both "
                            "in host mode") for w in warnings), warnings  # fmt: skip


GIT = (
    "services:\n  git:\n    image: gitea\n"
    "    ports: ['3000:3000', '2222:22', '6060:6060', {target: 9000, published: 9000, mode: host}]\n"
)


def test_a_routed_services_other_ports_stay_published_in_host_mode_or_go_through_the_l7(tmp_path: Path):
    project = _project(tmp_path, GIT)
    routing = {"dns_names": ["git.dev.localhost"], "http_port": 3000, "tcp": [{"port": 22, "published": 2222}]}
    prepared = prepare(_estate({"services": {"git": routing}}), project, "dev")
    git = prepared.stacks["app"].services["git"]
    assert [(p.target, p.published, p.mode) for p in git.ports] == [(6060, 6060, "host"), (9000, 9000, "host")]
    (route,) = prepared.routes
    assert [(t.port, t.published) for t in route.routing.tcp] == [(22, 2222)]
    # the one that changed mode is a warning saying what host mode means; the host-mode one stays silently
    (warning,) = [w for w in prepared.warnings if "stays published" in w]
    assert warning.startswith("stacks/app/docker-compose.yml: service git: ports: 6060:6060/tcp stays published, "
                              "in host mode: a service behind the L7 is dnsrr")  # fmt: skip
    assert "swarm-estate:estate.stacks.app.services.git.tcp" in warning


def test_a_tcp_route_may_not_take_a_port_the_l7_or_another_route_holds():
    raw = estate_of("dev")
    raw["stacks"] = {
        "a": {"compose": "x.yml", "services": {"git": {"tcp": [{"port": 22, "published": 2222}]}}},
        "b": {"compose": "y.yml", "services": {"db": {"tcp": [{"port": 5432, "published": 2222},
                                                              {"port": 5433, "published": 80}]}}},
    }  # fmt: skip
    with pytest.raises(EstateConfigError) as info:
        load_estate(raw)
    assert info.value.problems == [
        "swarm-estate:estate.stacks.b.services.db.tcp[0].published: the L7's TCP route to b/db:5432 (2222/tcp) "
        "clashes with the L7's TCP route to a/git:22 (swarm-estate:estate.stacks.a.services.git.tcp[0].published) "
        "on the L7 nodes: one host port can be published once",
        "swarm-estate:estate.stacks.b.services.db.tcp[1].published: the L7's TCP route to b/db:5433 (80/tcp) "
        "clashes with the L7 HTTP port (swarm-estate:estate.l7.http_port) on the L7 nodes: one host port can be "
        "published once",
    ]


def test_a_stack_port_clashing_with_a_tcp_route_is_refused(tmp_path: Path):
    project = _stacks_project(tmp_path, {"app": "services:\n  ssh:\n    image: sshd\n    ports: ['2222:22']\n",
                                         "git": GIT})  # fmt: skip
    raw = estate_of("dev")
    raw["stacks"] = {
        "app": {"compose": "stacks/app/docker-compose.yml"},
        "git": {"compose": "stacks/git/docker-compose.yml", "services": {"git": {
            "dns_names": ["git.dev.localhost"], "http_port": 3000, "tcp": [{"port": 22, "published": 2222}]}}},
    }  # fmt: skip
    (problem,) = _prepare_problems(raw, project)
    assert problem.startswith("stacks/app/docker-compose.yml: service ssh: ports: 2222/tcp (ingress mode) clashes "
                              "with the L7's TCP route to git/git:22 "
                              "(swarm-estate:estate.stacks.git.services.git.tcp[0].published)")  # fmt: skip


def test_names_of_configs_and_secrets_from_the_file_are_not_kept_and_that_is_explained(tmp_path: Path):
    compose = (
        "services:\n  web:\n    image: nginx\n    configs: [site]\n    secrets: [key]\n"
        "configs:\n  site: {name: site-v1, file: ./site.conf}\nsecrets:\n  key: {name: tls-key, file: ./k}\n"
    )
    project = _project(tmp_path, compose, {"site.conf": "x\n", "k": "y\n"})
    warnings = prepare(_estate({}), project, "dev").warnings
    assert any(w.startswith("stacks/app/docker-compose.yml: configs.site.name: 'site-v1' is not kept: swarm-estate "
                            "names it app_site-<content hash>") for w in warnings), warnings  # fmt: skip
    assert any(w.startswith("stacks/app/docker-compose.yml: secrets.key.name: 'tls-key' is not kept: swarm-estate "
                            "names it app_key-<suffix>") for w in warnings), warnings  # fmt: skip


@pytest.mark.parametrize("line", ["=value", "MY KEY=value"])
def test_env_file_lines_docker_refuses_are_refused_with_file_and_line(tmp_path: Path, line: str):
    (tmp_path / "docker-compose.yml").write_text("services:\n  web:\n    image: nginx\n    env_file: a.env\n")
    (tmp_path / "a.env").write_text(f"OK=1\n{line}\n")
    rc, _, _ = docker_stack_config(tmp_path / "docker-compose.yml", {})
    assert rc != 0  # the reference refuses it too
    _, problems = parse_compose((tmp_path / "docker-compose.yml").read_text(), "c.yml", tmp_path, {})
    (problem,) = problems
    assert problem.startswith("c.yml: service web: env_file: a.env:2: ")
