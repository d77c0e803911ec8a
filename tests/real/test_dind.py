"""The docker substrate under the mock engine: what `pulumi up -s dev` would create on your engine."""

from __future__ import annotations

import os
from pathlib import Path

from components.model import load_estate
from tests.harness.project import estate_of


def containers(result):
    return {r["inputs"]["name"]: r for r in result.by_type("docker:index/container:Container")}


def test_one_container_per_node_with_fixed_address_and_own_volume(synth, dev_estate):
    result = synth(dev_estate)
    spec = load_estate(estate_of("dev"))
    by_name = containers(result)
    assert sorted(by_name) == sorted(f"dev-{n.name}" for n in spec.nodes)
    volumes = {r["name"]: r["inputs"]["name"] for r in result.by_type("docker:index/volume:Volume")}
    for node in spec.nodes:
        c = by_name[f"dev-{node.name}"]["inputs"]
        assert c["networksAdvanced"] == [{"name": "dev-swarm-dev", "ipv4Address": str(node.address)}]
        mount = c["volumes"][0]
        assert mount["containerPath"] == "/var/lib/docker"
        assert mount["volumeName"] == f"dev-{node.name}-docker" == volumes[f"dev-nodes-{node.name}-data"]


def test_ports_are_published_on_loopback_only(synth, dev_estate):
    dev_estate["swarm"]["managers"] = 3
    result = synth(dev_estate)
    published = {name: r["inputs"].get("ports", []) for name, r in containers(result).items()}
    assert all(p["ip"] == "127.0.0.1" for ports in published.values() for p in ports)
    # no engine API on TCP: the managers publish nothing
    assert published["dev-manager1"] == published["dev-manager2"] == published["dev-manager3"] == []
    # the two L7-labelled workers: their :80/:443 at 8080/8443 and 8081/8444
    assert {(p["external"], p["internal"]) for p in published["dev-worker1"]} == {(8080, 80), (8443, 443)}
    assert {(p["external"], p["internal"]) for p in published["dev-worker2"]} == {(8081, 80), (8444, 443)}
    assert result.outputs["l7_entrypoints"] == ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]


def test_unprivileged_nodes_get_the_capability_set(synth, dev_estate):
    dev_estate["docker"]["privileged"] = False
    c = containers(synth(dev_estate))["dev-worker1"]["inputs"]
    assert c["privileged"] is False
    assert "CAP_SYS_ADMIN" in c["capabilities"]["adds"] and c["capabilities"]["drops"] == ["CAP_SYS_RESOURCE"]
    assert "seccomp=unconfined" in c["securityOpts"]
    assert "NODE_PRIVILEGED=false" in c["envs"]


def test_everything_is_on_the_configured_engine(synth, dev_estate):
    dev_estate["docker"]["engine_host"] = "unix:///tmp/other.sock"
    result = synth(dev_estate)
    provider = result.named("dev-nodes-engine")
    assert provider["inputs"]["host"] == "unix:///tmp/other.sock"
    on_engine = [r for r in result.resources if r["type"].startswith("docker:index/") and r["parent"] == "dev-nodes"]
    assert on_engine and all(r["provider"] == provider["name"] for r in on_engine)
    # the swarm's own objects go to the first manager's engine, through its socket in the user's own directory
    swarm = result.named("dev-swarm-provider")
    assert swarm["inputs"]["host"] == f"unix://{Path('~/.local/state/swarm-estate/dev/docker.sock').expanduser()}"
    manager = containers(result)["dev-manager1"]["inputs"]
    assert {"hostPath": str(Path("~/.local/state/swarm-estate/dev").expanduser()),
            "containerPath": "/run/swarm-estate"} in manager["volumes"]  # fmt: skip
    assert f"NODE_API_GROUP={os.getgid()}" in manager["envs"]
    assert not any("hostPath" in v for v in containers(result)["dev-worker1"]["inputs"]["volumes"])


def test_node_readiness_waits_on_each_container(synth, dev_estate):
    result = synth(dev_estate)
    ready = {r["name"]: r for r in result.by_type("command:local:Command") if r["name"].endswith("-ready")}
    assert set(ready) == {"dev-nodes-manager1-ready", "dev-nodes-worker1-ready", "dev-nodes-worker2-ready"}
    r = ready["dev-nodes-worker1-ready"]
    assert "dev-nodes-worker1" in r["dependencies"]
    assert "docker exec dev-worker1 docker info" in r["inputs"]["create"]
