"""AppStack under the mock engine: what `pulumi up` would send the docker provider for each stack."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from components.prepare import prepare
from tests.harness import schema
from tests.harness.compose import docker_stack_config
from tests.harness.project import COMPOSE_CASES, ROOT, TEST_SECRETS, estate_of
from tests.harness.specs import synth_stacks
from tools.synth import FakeEngine, RecordingMonitor, SynthResult

SERVICE = "docker:index/service:Service"
NETWORK = "docker:index/network:Network"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
SECRET = "docker:index/secret:Secret"
STACK_LABEL = "com.docker.stack.namespace"
NFS_OPTIONS = "addr=10.20.0.250,nfsvers=4.1"
STACKS = ("conductor", "shinyproxy", "stager", "registry", "portainer")


@pytest.fixture(scope="module")
def prod() -> SynthResult:
    return synth_stacks(estate_of("prod"))


def labels(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {i["label"]: i["value"] for i in items or []}


def services(result: SynthResult) -> dict[str, dict[str, Any]]:
    return {r["inputs"]["name"]: r for r in result.by_type(SERVICE)}


def test_names_and_labels_follow_the_stack_convention(prod: SynthResult):
    found = services(prod)
    assert set(found) == {
        "conductor_conductor-server", "conductor_conductor-ui", "shinyproxy_shinyproxy", "stager_db",
        "stager_service", "stager_ui", "registry_registry", "portainer_agent", "portainer_portainer",
    }  # fmt: skip
    for name, res in found.items():
        stack = name.split("_", 1)[0]
        assert res["parent"] == stack
        assert labels(res["inputs"]["labels"])[STACK_LABEL] == stack
        assert labels(res["inputs"]["taskSpec"]["containerSpec"]["labels"])[STACK_LABEL] == stack
    owned = {r["inputs"]["name"]: r for r in prod.by_type(NETWORK) if r["parent"]}
    assert set(owned) == {
        "conductor_conductor-network", "shinyproxy_shinyproxy-apps", "stager_default", "portainer_agent_network",
    }  # fmt: skip
    for name, res in owned.items():
        assert res["inputs"]["driver"] == "overlay"
        assert labels(res["inputs"]["labels"])[STACK_LABEL] == name.split("_", 1)[0]
    for res in prod.by_type(CONFIG):
        stack = res["parent"]
        assert re.fullmatch(rf"{stack}_[a-z-]+-[0-9a-f]{{12}}", res["inputs"]["name"]), res["inputs"]["name"]
        assert labels(res["inputs"]["labels"])[STACK_LABEL] == stack


def test_conductor_matches_the_seed(prod: SynthResult):
    server = services(prod)["conductor_conductor-server"]["inputs"]
    task = server["taskSpec"]
    assert server["mode"] == {"replicated": {"replicas": 2}}
    assert task["placement"]["constraints"] == ["node.role == worker"]
    assert task["logDriver"] == {"name": "journald"}
    assert task["restartPolicy"] == {"condition": "on-failure", "delay": "5s", "maxAttempts": 3, "window": "2m"}
    (config,) = task["containerSpec"]["configs"]
    assert config["fileName"] == "/app/config/conductor-swarm-config.properties"
    assert config["configId"].startswith("conductor-config-swarm-config-") and config["configId"].endswith("-id")
    # the UI reaches http://conductor-server:8080 through the alias, given (as by `docker stack deploy`) on every
    # network the service joins, the shared one included
    nets = {n["id"]: n.get("aliases") for n in task["networksAdvanceds"]}
    assert nets == {"conductor-net-conductor-network-id": ["conductor-server"], "public-id": ["conductor-server"]}


def test_routed_services_are_dnsrr_on_the_public_network_without_ports(prod: SynthResult):
    found = services(prod)
    routed = {r.swarm_service for r in prepare(estate_of("prod"), ROOT, "prod").routes}
    assert len(routed) == 6
    for name in routed:
        inputs = found[name]["inputs"]
        assert inputs["endpointSpec"] == {"mode": "dnsrr"}, name
        assert "public-id" in [n["id"] for n in inputs["taskSpec"]["networksAdvanceds"]], name
    # a service nobody routes keeps the VIP and the port its compose file publishes
    assert found["stager_service"]["inputs"]["endpointSpec"] == {
        "mode": "vip",
        "ports": [{"publishMode": "ingress", "protocol": "tcp", "publishedPort": 3100, "targetPort": 3000}],
    }


def _nfs_mounts(res: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = res["inputs"]["taskSpec"]["containerSpec"].get("mounts", [])
    return [m for m in mounts if (m.get("volumeOptions") or {}).get("driverOptions", {}).get("type") == "nfs"]


def test_nfs_volumes_are_in_the_mount_spec_of_every_service_that_uses_them(prod: SynthResult):
    found = services(prod)
    expected = {
        "stager_db": ("stager_stager-data", "/data", ":/export/docker/data/stager"),
        "registry_registry": ("registry_data", "/var/lib/registry", ":/export/docker/registry"),
        "portainer_portainer": ("portainer_data", "/data", ":/export/docker/portainer"),
    }
    using = {name for name, res in found.items() if _nfs_mounts(res)}
    assert using == set(expected)
    for name, (source, target, device) in expected.items():
        (mount,) = _nfs_mounts(found[name])
        assert (mount["type"], mount["source"], mount["target"]) == ("volume", source, target)
        assert mount["volumeOptions"]["driverName"] == "local"
        assert mount["volumeOptions"]["driverOptions"] == {"type": "nfs", "o": NFS_OPTIONS, "device": device}
    # never a docker.Volume: that would exist on the manager the provider talks to, and nowhere else
    assert not [r for r in prod.resources if r["type"] == "docker:index/volume:Volume"]


def test_nfs_volume_shared_by_two_services_is_in_both(tmp_path: Path):
    compose = (
        "services:\n  a:\n    image: a\n    volumes: [shared:/data]\n"
        "  b:\n    image: b\n    volumes: [{type: volume, source: shared, target: /srv, read_only: true}]\n"
        "volumes:\n  shared:\n"
    )
    project = _project(tmp_path, compose)
    raw = _estate({"volumes": {"shared": {"nfs": "data", "subpath": "app"}}})
    found = services(synth_stacks(raw, project))
    for name in ("app_a", "app_b"):
        (mount,) = _nfs_mounts(found[name])
        assert mount["source"] == "app_shared"
        assert mount["volumeOptions"]["driverOptions"]["device"] == ":/srv/nfs/app"
    assert _nfs_mounts(found["app_b"])[0]["readOnly"] is True


def test_secret_content_never_reaches_the_recorded_inputs(prod: SynthResult):
    text = json.dumps(prod.resources)
    assert TEST_SECRETS["swarm-estate:registryHtpasswd"] not in text
    (secret,) = prod.by_type(SECRET)
    # the data is secret; the name is the provider's (`registry_htpasswd-<random>`), derived from nothing secret
    assert secret["inputs"]["data"] == "[secret]" and "name" not in secret["inputs"]
    assert secret["name"] == "registry_htpasswd"
    registry = services(prod)["registry_registry"]["inputs"]["taskSpec"]["containerSpec"]
    assert registry["secrets"][0]["fileName"] == "htpasswd"
    assert registry["env"]["REGISTRY_AUTH_HTPASSWD_PATH"] == "/run/secrets/htpasswd"


# --- content-hashed names --------------------------------------------------------------------------


def _project(tmp_path: Path, compose: str, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "stacks" / "app"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "docker-compose.yml").write_text(compose)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return tmp_path


def _estate(stack: dict[str, Any]) -> dict[str, Any]:
    raw = estate_of("dev")
    raw["nfs"] = {"exports": [{"name": "data", "server": "10.20.0.250", "path": "/srv/nfs"}]}
    raw["stacks"] = {"app": {"compose": "stacks/app/docker-compose.yml", **stack}}
    return raw


CONFIGS = (
    "services:\n  web:\n    image: nginx\n    configs: [one, two]\n    secrets: [token]\n"
    "configs:\n  one: {file: ./one.txt}\n  two: {file: ./two.txt}\nsecrets:\n  token: {}\n"
)


def _objects(monitor: RecordingMonitor) -> dict[str, tuple[str, str]]:
    """Resource name -> (swarm name, data) of each config/secret from the raw requests, secrets unwrapped
    (the test's eyes only). A secret has no swarm name of the program's: "" stands for the provider's."""
    out = {}
    for request in monitor.requests:
        if request.type in (CONFIG, SECRET):
            inputs = json_format.MessageToDict(request.object)
            plain = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in inputs.items()}
            out[request.name] = (plain.get("name", ""), plain["data"])
    return out


def _deployed(tmp_path: Path, one: str, two: str, token: str) -> dict[str, tuple[str, str]]:
    project = _project(tmp_path, CONFIGS, {"one.txt": one, "two.txt": two})
    monitor = RecordingMonitor(FakeEngine())
    synth_stacks(_estate({"secrets": {"token": "appToken"}}), project, {"swarm-estate:appToken": token}, monitor)
    return _objects(monitor)


def test_a_config_is_a_new_resource_exactly_when_its_content_changes_and_a_secret_follows_its_value(tmp_path: Path):
    base = _deployed(tmp_path / "a", "one\n", "two\n", "s3cret")
    one, two = (f"app-config-{key}-{sha12(text)}" for key, text in (("one", "one\n"), ("two", "two\n")))
    assert set(base) == {one, two, "app_token"}
    assert base[one][0] == "app_one-" + sha12("one\n") and base["app_token"][0] == ""
    assert _deployed(tmp_path / "b", "one\n", "two\n", "s3cret") == base
    changed = _deployed(tmp_path / "c", "one, edited\n", "two\n", "s3cret")
    edited = "app-config-one-" + sha12("one, edited\n")
    assert set(changed) == {edited, two, "app_token"}  # a new resource for the new content, the old one goes
    assert (changed[two], changed["app_token"]) == (base[two], base["app_token"])
    rotated = _deployed(tmp_path / "d", "one\n", "two\n", "rotated")
    # a new value is new data on the same resource: the provider replaces it create-before-delete
    assert set(rotated) == set(base) and rotated["app_token"][1] != base["app_token"][1]
    assert {k: v for k, v in rotated.items() if k != "app_token"} == {k: v for k, v in base.items() if k != "app_token"}


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- removal, schema ---------------------------------------------------------------------------------


def test_removing_a_stack_removes_its_services_and_networks_but_no_data(prod: SynthResult):
    raw = estate_of("prod")
    del raw["stacks"]["stager"]
    without = synth_stacks(raw)
    before = {(r["type"], r["name"]): r for r in prod.resources}
    after = {(r["type"], r["name"]): r for r in without.resources}
    gone = set(before) - set(after)
    assert gone == {
        ("swarm-estate:stacks:AppStack", "stager"),
        (NETWORK, "stager-net-default"),
        (SERVICE, "stager-db"),
        (SERVICE, "stager-service"),
        (SERVICE, "stager-ui"),
    }
    assert set(after) <= set(before)
    for key, res in after.items():
        assert res["inputs"] == before[key]["inputs"], key
    # The NFS data of stager-data lives only in stager_db's mount spec: nothing to delete it.
    assert not [r for r in prod.resources if "volume:Volume" in r["type"]]


def test_every_resource_matches_the_docker_provider_schema(prod: SynthResult):
    if not schema.available():
        pytest.skip("provider schemas are not beside this checkout")
    dev = synth_stacks(estate_of("dev"))
    problems = [p for result in (prod, dev) for r in result.resources for p in schema.problems(r)]
    assert problems == []
    assert len(prod.by_type(SERVICE)) == 9 and len(dev.by_type(SERVICE)) == 1


def test_dev_demo_is_one_routed_web_service():
    raw = estate_of("dev")
    raw["stacks"]["demo"]["variables"] = {"DEMO_IMAGE": "swarm-estate/busybox:test"}
    (web,) = synth_stacks(raw).by_type(SERVICE)
    inputs = web["inputs"]
    assert inputs["name"] == "demo_web"
    assert inputs["taskSpec"]["containerSpec"]["image"] == "swarm-estate/busybox:test"
    assert inputs["mode"] == {"replicated": {"replicas": 2}}
    assert inputs["endpointSpec"] == {"mode": "dnsrr"}
    files = {c["fileName"] for c in inputs["taskSpec"]["containerSpec"]["configs"]}
    assert files == {"/www/index.html", "/www/health"}


def test_published_stack_files_are_valid_for_docker_and_free_of_secrets(prod: SynthResult, tmp_path: Path):
    published = {p: t for p, t in prod.files.items() if p.startswith("stacks/")}
    assert set(published) == {f"stacks/{s}/docker-compose.yml" for s in STACKS}
    for path, text in published.items():
        assert TEST_SECRETS["swarm-estate:registryHtpasswd"] not in text
        file = tmp_path / path.replace("/", "_")
        file.write_text(text)
        rc, doc, stderr = docker_stack_config(file, {})
        assert rc == 0, f"{path}: {stderr}"
        assert set(doc["services"]) == {
            n.split("_", 1)[1] for n in services(prod) if n.startswith(path.split("/")[1] + "_")
        }
    stager = yaml.safe_load(published["stacks/stager/docker-compose.yml"])
    assert stager["volumes"]["stager-data"]["driver_opts"]["device"] == ":/export/docker/data/stager"
    assert stager["services"]["ui"]["deploy"]["endpoint_mode"] == "dnsrr"


def test_every_compose_feature_passes_the_provider_schema():
    if not schema.available():
        pytest.skip("provider schemas are not beside this checkout")
    raw = estate_of("dev")
    raw["stacks"] = {
        "sink": {"compose": "kitchen_sink/docker-compose.yml"},
        "short": {"compose": "short_and_long/docker-compose.yml"},
        "inline": {"compose": "inline_config/docker-compose.yml", "variables": {"SITE": "dev"}},
    }
    result = synth_stacks(raw, COMPOSE_CASES)
    assert [p for r in result.resources for p in schema.problems(r)] == []
    assert len(result.by_type(SERVICE)) == 4


def test_an_undeclared_default_network_named_by_a_service_is_the_stacks_own(tmp_path: Path):
    compose = (
        "services:\n  a:\n    image: a\n    networks: [default]\n"
        "  b:\n    image: b\n    networks: {default: {aliases: [bee]}}\n"
    )
    result = synth_stacks(_estate({}), _project(tmp_path, compose))
    (network,) = [r for r in result.by_type(NETWORK) if r["parent"] == "app"]
    assert network["inputs"]["name"] == "app_default"
    found = services(result)
    assert found["app_b"]["inputs"]["taskSpec"]["networksAdvanceds"] == [
        {"aliases": ["bee", "b"], "id": "app-net-default-id"}
    ]
