"""The swarm layer under the mock engine: graph shape, secret tokens, flat dependency depth,
removal ordering, and the scripts' own static checks."""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import subprocess
from functools import cache
from typing import Any

import pulumi
import pulumi_command as command
import pytest
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks

from components.config_secrets import SecretSource
from components.machines import HostRecord
from components.model import EstateConfigError, EstateSpec, load_estate
from components.swarm import (
    SCRIPTS_DIR,
    Cluster,
    ClusterArgs,
    drift,
    in_container,
    observed_nodes,
    parse_kv,
    script_command,
    script_hash,
)
from tests.harness.project import TEST_SECRETS, estate_of
from tools.synth import FakeEngine, RecordingMonitor, SynthResult, run_function

CLUSTER = "swarm"
MANAGER_TOKEN = "SWMTKN-1-unittestdigest-MANAGERSECRET0001"
WORKER_TOKEN = "SWMTKN-1-unittestdigest-WORKERSECRET0002"
COMMAND_TYPES = ("command:remote:Command", "command:local:Command")


class SwarmEngine(FakeEngine):
    """Answers the init and join commands the way the scripts do, so tokens and node ids flow."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        rid, state = super().new_resource(args)
        if args.name == f"{CLUSTER}-init":
            state["stdout"] = (
                f"cluster_id=CLUSTERID\nnode_id=ID-init\nmanager_token={MANAGER_TOKEN}\nworker_token={WORKER_TOKEN}\n"
            )
        elif args.name.endswith("-join"):
            state["stdout"] = f"node_id=ID-{args.name.removeprefix(CLUSTER + '-').removesuffix('-join')}\n"
        return rid, state


class ObservingEngine(SwarmEngine):
    """…and answers the drift check's `command:local:run` with the given `docker node inspect` objects."""

    def __init__(self, observed: dict[str, dict[str, Any]]):
        self.observed = observed

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list[tuple[str, str]]]:
        if args.token == "command:local:run":
            lines = "\n".join(json.dumps(node) for node in self.observed.values())
            return {"command": args.args["command"], "stdout": lines, "stderr": ""}, []
        return super().call(args)


def _cluster_with_observation(spec: EstateSpec, observed: dict[str, dict[str, Any]]) -> SynthResult:
    def program() -> None:
        Cluster(CLUSTER, ClusterArgs(spec=spec, hosts=host_records(spec, "docker"), secrets=SecretSource()))

    raw = estate_of("dev")
    return run_function(program, {"swarm-estate:estate": raw}, monitor=RecordingMonitor(ObservingEngine(observed)))


def host_records(spec: EstateSpec, kind: str) -> list[HostRecord]:
    secrets = SecretSource()
    records = []
    for node in spec.nodes:
        ready = command.local.Command(f"host-{node.name}", create="true")
        if kind == "ssh":
            conn = command.remote.ConnectionArgs(
                host=str(node.address), user=node.ssh_user, private_key=secrets.get("sshPrivateKey")
            )
            records.append(HostRecord(node=node, connection=conn, container=None, ready=(ready,)))
        else:
            records.append(HostRecord(node=node, connection=None, container=f"{spec.name}-{node.name}", ready=(ready,)))
    return records


def synth_cluster(raw: dict[str, Any], kind: str = "ssh") -> tuple[SynthResult, RecordingMonitor]:
    spec = load_estate(raw)
    monitor = RecordingMonitor(SwarmEngine())

    def program() -> None:
        cluster = Cluster(CLUSTER, ClusterArgs(spec=spec, hosts=host_records(spec, kind), secrets=SecretSource()))
        pulumi.export("manager_token", cluster.manager_token)
        pulumi.export("worker_token", cluster.worker_token)
        pulumi.export("cluster_id", cluster.cluster_id)
        pulumi.export("node_ids", cluster.node_ids)

    result = run_function(program, {"swarm-estate:estate": raw, **TEST_SECRETS}, monitor=monitor)
    return result, monitor


@cache
def _prod() -> tuple[SynthResult, RecordingMonitor]:
    return synth_cluster(estate_of("prod"))


def with_workers(count: int) -> dict[str, Any]:
    raw = estate_of("prod")
    raw["swarm"]["workers"]["count"] = count
    return raw


def raw_input(monitor: RecordingMonitor, name: str, key: str) -> Any:
    """An input as the engine received it, secrets unwrapped (to check where a command runs)."""
    (request,) = [r for r in monitor.requests if r.name == name]
    value = json_format.MessageToDict(request.object)[key]
    return value["value"] if isinstance(value, dict) and "value" in value and len(value) == 2 else value


def commands(result: SynthResult) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in result.resources if r["type"] in COMMAND_TYPES}


def script_env(line: str) -> dict[str, str]:
    """The `env K=V …` assignments of a command line built by script_command."""
    words = shlex.split(line)
    start = words.index("env") + 1
    env = {}
    for word in words[start:]:
        if "=" not in word or word == "sh":
            break
        key, _, value = word.partition("=")
        env[key] = value
    return env


def test_graph_shape_per_node() -> None:
    result, monitor = _prod()
    spec = load_estate(estate_of("prod"))
    (component,) = result.by_type("swarm-estate:swarm:Cluster")
    assert component["name"] == CLUSTER
    cmds = commands(result)
    expected = {f"{CLUSTER}-init"}
    expected |= {f"{CLUSTER}-{n.name}-{part}" for n in spec.nodes for part in ("registration", "join", "membership")}
    assert set(cmds) - {f"host-{n.name}" for n in spec.nodes} == expected
    for name in expected:
        assert cmds[name]["parent"] == CLUSTER
        assert cmds[name]["type"] == "command:remote:Command"
    # Manager-side steps run on the first manager, a node's join on the node itself.
    assert raw_input(monitor, f"{CLUSTER}-docker-swarm4-membership", "connection")["host"] == "10.20.0.10"
    assert raw_input(monitor, f"{CLUSTER}-docker-swarm4-registration", "connection")["host"] == "10.20.0.10"
    assert raw_input(monitor, f"{CLUSTER}-docker-swarm4-join", "connection")["host"] == "10.20.0.23"
    # The SSH key stays a secret on every command that carries it.
    assert all(cmds[n]["inputs"]["connection"] == "[secret]" for n in expected)


def test_provider_and_overlays_go_through_the_swarm_provider() -> None:
    raw = estate_of("prod")
    raw["overlays"] = [{"name": "backend", "subnet": "10.11.0.0/24", "encrypted": True, "attachable": False}]
    result, _ = synth_cluster(raw)
    provider = result.named(f"{CLUSTER}-provider")
    assert provider["type"] == "pulumi:providers:docker"
    assert provider["inputs"]["host"] == "ssh://ops@10.20.0.10:22"
    assert f"{CLUSTER}-init" in provider["dependencies"]
    public = result.named(f"{CLUSTER}-net-haproxy-public")
    assert public["provider"] == f"{CLUSTER}-provider"
    assert public["inputs"]["name"] == "haproxy-public"
    assert public["inputs"]["driver"] == "overlay"
    assert public["inputs"]["attachable"] is True
    # the gateway Docker would pick, spelled out so a refresh reads back what the program says
    assert public["inputs"]["ipamConfigs"] == [{"subnet": "10.10.0.0/22", "gateway": "10.10.0.1"}]
    assert "encrypted" not in (public["inputs"].get("options") or {})
    backend = result.named(f"{CLUSTER}-net-backend")
    assert backend["inputs"]["options"] == {"encrypted": "true"}
    assert backend["inputs"]["attachable"] is False
    assert backend["provider"] == f"{CLUSTER}-provider"


def test_join_tokens_are_secret_and_never_in_plain_text() -> None:
    result, monitor = _prod()
    assert result.outputs["manager_token"] == "[secret]"
    assert result.outputs["worker_token"] == "[secret]"
    assert result.outputs["cluster_id"] == "CLUSTERID"  # not a credential: stays readable
    (init,) = [r for r in monitor.requests if r.name == f"{CLUSTER}-init"]
    assert "stdout" in init.additionalSecretOutputs
    assert init.object["logging"] == "stderr"  # its stdout holds the tokens
    dump = json.dumps(result.resources) + json.dumps(result.outputs) + json.dumps(result.files)
    assert MANAGER_TOKEN not in dump and WORKER_TOKEN not in dump
    cmds = commands(result)
    for join in (f"{CLUSTER}-docker-swarm-mgr2-join", f"{CLUSTER}-docker-swarm4-join"):
        # a reviewer reads what will run on the node; the token rides on stdin, a secret
        assert cmds[join]["inputs"]["create"].endswith(" swarm-join.sh")
        assert "ADVERTISE_ADDR=" in cmds[join]["inputs"]["create"]
        assert cmds[join]["inputs"]["stdin"] == "[secret]"


def test_joins_get_the_token_of_their_role() -> None:
    _, monitor = _prod()

    def create_of(name: str) -> str:
        return raw_input(monitor, name, "create")

    manager_env = script_env(create_of(f"{CLUSTER}-docker-swarm-mgr3-join"))
    worker_env = script_env(create_of(f"{CLUSTER}-docker-swarm5-join"))
    assert "JOIN_TOKEN" not in manager_env and "JOIN_TOKEN" not in worker_env
    assert raw_input(monitor, f"{CLUSTER}-docker-swarm-mgr3-join", "stdin") == MANAGER_TOKEN + "\n"
    assert raw_input(monitor, f"{CLUSTER}-docker-swarm5-join", "stdin") == WORKER_TOKEN + "\n"
    assert worker_env["MANAGER_ADDR"] == "10.20.0.10"
    assert worker_env["MANAGER_ADDRS"] == "10.20.0.10 10.20.0.11 10.20.0.12"
    assert worker_env["ADVERTISE_ADDR"] == "10.20.0.24"
    assert worker_env["CLUSTER_ID"] == "CLUSTERID"


def test_membership_carries_the_model_labels_and_the_node_id() -> None:
    result, _ = _prod()
    cmds = commands(result)
    env = script_env(cmds[f"{CLUSTER}-docker-swarm1-membership"]["inputs"]["create"])
    assert env["NODE"] == "ID-docker-swarm1"  # from the join's output, not the host name
    assert env["LABELS"] == "function=production l7=true"
    assert env["OWNED_PREFIXES"] == "function l7"
    assert (env["ROLE"], env["AVAILABILITY"]) == ("worker", "active")
    first = script_env(cmds[f"{CLUSTER}-docker-swarm-mgr1-membership"]["inputs"]["create"])
    assert first["NODE"] == "ID-docker-swarm-mgr1" and first["ROLE"] == "manager" and first["LABELS"] == ""
    assert result.outputs["node_ids"]["docker-swarm5"] == "ID-docker-swarm5"


def test_init_takes_the_swarm_settings_from_the_model() -> None:
    raw = estate_of("prod")
    raw["swarm"].update(
        default_addr_pool=["10.200.0.0/16", "10.201.0.0/16"], default_addr_pool_mask_length=26, data_path_port=4790
    )
    result, _ = synth_cluster(raw)
    env = script_env(commands(result)[f"{CLUSTER}-init"]["inputs"]["create"])
    assert env == {
        "ADVERTISE_ADDR": "10.20.0.10",
        "DATA_PATH_PORT": "4790",
        "DEFAULT_ADDR_POOL": "10.200.0.0/16 10.201.0.0/16",
        "DEFAULT_ADDR_POOL_MASK_LENGTH": "26",
    }


def test_dependency_depth_does_not_grow_with_the_worker_count() -> None:
    small, _ = synth_cluster(with_workers(5))
    large, _ = synth_cluster(with_workers(50))
    assert len(commands(large)) - len(commands(small)) == 45 * 4  # host + registration + join + membership
    assert small.critical_path() == large.critical_path()
    # first host -> init -> the first manager's registration -> join -> membership -> then any other
    # node's registration -> join -> membership, whatever the count.
    assert large.critical_path() == 8
    for name, r in commands(large).items():
        if name.endswith("-join"):
            # Every join hangs off init (its token), its own registration and its own host only.
            node = name.removeprefix(f"{CLUSTER}-").removesuffix("-join")
            assert sorted(r["dependencies"]) == sorted(
                [f"{CLUSTER}-init", f"{CLUSTER}-{node}-registration", f"host-{node}"]
            )
        if name.endswith("-registration"):
            # ...and every registration off init (the token) and, but for the first manager's own, that
            # manager's membership: a whole-estate destroy removes the others before the last manager.
            deps = r["dependencies"]
            assert f"{CLUSTER}-init" in deps
            others = [d for d in deps if d != f"{CLUSTER}-init"]
            assert others in ([], [f"{CLUSTER}-docker-swarm-mgr1-membership"]), (name, deps)


def delete_order(result: SynthResult, names: list[str]) -> list[str]:
    """The order Pulumi deletes `names` in: a resource goes only after everything that depends on it."""
    deps = {r["name"]: set(r["dependencies"]) for r in result.resources}
    remaining, order = list(names), []
    while remaining:
        ready = [n for n in remaining if not any(n in deps[m] for m in remaining if m != n)]
        assert ready, f"dependency cycle among {remaining}"
        order += sorted(ready)
        remaining = [n for n in remaining if n not in ready]
    return order


@pytest.mark.parametrize("node", ["docker-swarm3", "docker-swarm-mgr2"])
def test_removal_runs_drain_then_leave_then_rm(node: str) -> None:
    result, monitor = _prod()
    cmds = commands(result)
    parts = [f"{CLUSTER}-{node}-{p}" for p in ("registration", "join", "membership")]
    order = delete_order(result, parts)
    scripts = [cmds[n]["inputs"]["delete"] for n in order]
    assert [s.split()[-1] for s in scripts] == ["swarm-node-drain.sh", "swarm-leave.sh", "swarm-node-rm.sh"]
    drain_env = script_env(scripts[0])
    assert drain_env["NODE"] == f"ID-{node}"
    rm_env = script_env(scripts[2])
    spec = load_estate(estate_of("prod"))
    model = next(n for n in spec.nodes if n.name == node)
    assert (rm_env["NODE_NAME"], rm_env["NODE_ADDR"]) == (node, str(model.address))
    # Drain and rm run on a remaining manager, the leave on the node that goes.
    hosts = [raw_input(monitor, n, "connection")["host"] for n in order]
    assert hosts == ["10.20.0.10", str(model.address), "10.20.0.10"]


def test_reordering_the_managers_moves_commands_and_deletes_nothing() -> None:
    def with_managers(order: list[str]) -> dict[str, Any]:
        raw = estate_of("prod")
        raw["swarm"]["managers"]["nodes"] = [{"name": n, "address": f"10.20.0.{10 + int(n[-1])}"} for n in order]
        return raw

    before, before_monitor = synth_cluster(with_managers(["mgr1", "mgr2", "mgr3"]))
    after, after_monitor = synth_cluster(with_managers(["mgr2", "mgr1", "mgr3"]))
    assert {r["name"] for r in before.resources} == {r["name"] for r in after.resources}
    for name in (f"{CLUSTER}-init", f"{CLUSTER}-mgr1-membership", f"{CLUSTER}-docker-swarm2-registration"):
        assert raw_input(before_monitor, name, "connection")["host"] == "10.20.0.11"
        assert raw_input(after_monitor, name, "connection")["host"] == "10.20.0.12"


def test_script_changes_rerun_commands_in_place() -> None:
    result, _ = _prod()
    for name, r in commands(result).items():
        if not name.startswith(CLUSTER):
            continue
        lines = [r["inputs"].get(k, "[secret]") for k in ("create", "delete")]
        used = {line.split()[-1] for line in lines if line != "[secret]"}
        for script in used:
            assert script_hash(script) in r["inputs"]["triggers"], (name, script)
        # An update command means a trigger change updates in place; without it the provider
        # would replace the resource and run its delete (leave the swarm!) on the way.
        assert r["inputs"]["update"] == r["inputs"]["create"]


def test_docker_in_docker_nodes_run_the_scripts_with_docker_exec() -> None:
    raw = estate_of("dev")
    result, _ = synth_cluster(raw, kind="container")
    cmds = commands(result)
    init = cmds[f"{CLUSTER}-init"]
    assert init["type"] == "command:local:Command"
    assert init["inputs"]["create"].startswith("docker exec dev-manager1 env ")
    assert init["inputs"]["environment"] == {"DOCKER_HOST": "unix:///var/run/docker.sock"}
    leave = cmds[f"{CLUSTER}-worker1-join"]["inputs"]["delete"]
    assert leave == in_container("dev-worker1", script_command("swarm-leave.sh", {"DISSOLVE": "true"}))
    socket = load_estate(estate_of("dev")).docker.api_socket("dev")
    assert result.named(f"{CLUSTER}-provider")["inputs"]["host"] == f"unix://{socket}"


def test_a_host_record_without_connection_or_container_is_refused() -> None:
    spec = load_estate(estate_of("prod"))

    def program() -> None:
        records = [HostRecord(node=n, connection=None, container=None, ready=()) for n in spec.nodes]
        Cluster(CLUSTER, ClusterArgs(spec=spec, hosts=records, secrets=SecretSource()))

    with pytest.raises(Exception, match="neither an SSH connection nor a container"):
        run_function(program, {"swarm-estate:estate": estate_of("prod"), **TEST_SECRETS})


def test_an_even_manager_count_is_rejected_before_any_resource() -> None:
    raw = copy.deepcopy(estate_of("prod"))
    raw["swarm"]["managers"]["count"] = 4
    with pytest.raises(EstateConfigError, match=r"swarm\.managers: 4 managers cannot tolerate more failures than 3"):
        load_estate(raw)


def test_script_command_round_trips_through_a_shell(tmp_path) -> None:
    """Quoting: values with spaces and quotes reach the script intact (a real sh parses the line)."""
    env = {"LABELS": "a=1 b='x y'", "NODE": "n$1"}
    probe = tmp_path / "probe.sh"
    probe.write_text('printf "%s|%s" "$LABELS" "$NODE"\n')
    line = script_command("swarm-leave.sh", env).replace(
        shlex.quote((SCRIPTS_DIR / "swarm-leave.sh").read_text()), shlex.quote(probe.read_text())
    )
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10, check=True).stdout
    assert out == "a=1 b='x y'|n$1"


def test_parse_kv_reads_only_key_value_lines() -> None:
    assert parse_kv("joined\nnode_id=abc\nmanager_token=SWMTKN-1-x=y\nnot a pair\n") == {
        "node_id": "abc",
        "manager_token": "SWMTKN-1-x=y",
    }


def test_scripts_pass_shellcheck_as_posix_sh() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (apt-get install shellcheck)"
    scripts = sorted(str(p) for p in SCRIPTS_DIR.glob("swarm-*.sh"))
    assert len(scripts) == 8
    result = subprocess.run([shellcheck, "--shell=sh", *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_a_whole_estate_destroy_removes_the_first_manager_last() -> None:
    result, _ = synth_cluster(with_workers(3))
    names = [n for n in commands(result) if not n.startswith("host-") and n != f"{CLUSTER}-init"]
    order = delete_order(result, names)
    first = [n for n in order if "-docker-swarm-mgr1-" in n]
    assert [n.rsplit("-", 1)[-1] for n in first] == ["membership", "join", "registration"]
    others = [i for i, n in enumerate(order) if "-docker-swarm-mgr1-" not in n]
    assert max(others) < order.index(first[0]), order


# --- drift: what the swarm shows against what the estate declares --------------------------------


def _seen(node_spec: Any, *, labels: dict[str, str] | None = None, availability: str | None = None,
          role: str | None = None) -> dict[str, dict[str, Any]]:
    """What `docker node inspect` shows for a node that swarm-node.sh converged, with changes."""
    applied = {**node_spec.labels, "swarm-estate.labels": ",".join(sorted(node_spec.labels))}
    return {str(node_spec.address): {
        "Status": {"Addr": str(node_spec.address)},
        "Spec": {"Labels": applied if labels is None else labels, "Role": role or node_spec.role,
                 "Availability": availability or node_spec.availability},
    }}


def test_a_converged_node_and_foreign_labels_are_no_drift() -> None:
    spec = load_estate(estate_of("dev"))
    worker = spec.workers[0]
    assert drift(spec, worker, _seen(worker)) == []
    foreign = {**_seen(worker)[str(worker.address)]["Spec"]["Labels"], "team": "search"}  # set by someone else
    assert drift(spec, worker, _seen(worker, labels=foreign)) == []
    assert drift(spec, worker, {}) == []  # not in the swarm yet: the join's business, not drift


def test_a_label_removed_or_changed_by_hand_is_drift() -> None:
    spec = load_estate(estate_of("dev"))
    worker = spec.workers[0]
    assert worker.labels == {"l7": "true"}
    removed = {"swarm-estate.labels": "l7"}
    assert drift(spec, worker, _seen(worker, labels=removed)) == ["label l7=true is missing"]
    changed = {"l7": "false", "swarm-estate.labels": "l7"}
    assert drift(spec, worker, _seen(worker, labels=changed)) == ["label l7=true is 'false'"]


def test_an_owned_label_added_by_hand_availability_and_role_are_drift() -> None:
    raw = estate_of("dev")
    raw["swarm"]["owned_label_prefixes"] = ["estate."]
    spec = load_estate(raw)
    worker = spec.workers[0]
    owned = {"l7": "true", "estate.zone": "b", "swarm-estate.labels": "l7"}
    assert drift(spec, worker, _seen(worker, labels=owned)) == ["label estate.zone is set but not declared"]
    assert drift(spec, worker, _seen(worker, availability="drain")) == ["availability is drain, not active"]
    assert drift(spec, worker, _seen(worker, role="manager")) == ["role is manager, not worker"]


def test_observed_nodes_are_keyed_by_their_address_and_garbage_is_skipped() -> None:
    lines = [json.dumps({"ID": "a", "Status": {"Addr": "10.0.0.20"}}), "not json", json.dumps({"ID": "b"}), ""]
    assert list(observed_nodes("\n".join(lines))) == ["10.0.0.20"]
    assert observed_nodes(None) == {} and observed_nodes("") == {}


def test_a_drifted_node_gets_a_new_stdin_and_the_others_ignore_theirs() -> None:
    spec = load_estate(estate_of("dev"))
    worker = spec.workers[0]
    assert drift(spec, worker, _seen(worker, labels={})) != []
    result = _cluster_with_observation(spec, _seen(worker, labels={}))
    memberships = {r["name"]: r for r in result.resources if r["name"].endswith("-membership")}
    drifted = memberships[f"{CLUSTER}-{worker.name}-membership"]
    stdin = drifted["inputs"]["stdin"]
    assert stdin.startswith("re-apply ") and "label l7=true is missing" in stdin
    assert "stdin" not in drifted["options"].get("ignoreChanges", [])
    for name, other in memberships.items():
        if name != drifted["name"]:
            assert "stdin" not in other["inputs"] and other["options"]["ignoreChanges"] == ["stdin"]
