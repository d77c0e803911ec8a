"""Swarm layer: init, join, labels, availability, role and graceful removal of every node.

Each host step is a small POSIX script under `components/scripts/`, run over SSH (libvirt and
existing hosts) or with `docker exec` (docker-in-docker nodes). `init` runs once on the first
manager of the model; then per node (the first manager included) the layer registers:

  registration (on the first manager)  create: check the manager   delete: `docker node rm`
  join         (on the node)           create: join the swarm      delete: leave the swarm
  membership   (on the first manager)  create: labels/availability/role   delete: drain, wait, demote

join depends on registration and membership on join, so when a node disappears from the model
Pulumi deletes them in the reverse order: drain/demote, then leave, then remove the entry.
Every join depends only on init and on its own host: the graph does not deepen with more workers.

Manager-side commands run on the first manager of the model, and a delete runs where its
resource was created. So the first manager is removed in two `pulumi up`s: move it down the
managers list (the commands move to the new first manager, nothing is deleted), then remove it.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from .config_secrets import SecretSource
from .machines import HostRecord
from .model import EstateSpec, Node
from .model.proxy import Overlay

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
SWARM_PORT = 2377
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
BOOKKEEPING_LABEL = "swarm-estate.labels"  # swarm-node.sh records the label keys the estate declared here
DRAIN_TIMEOUT_S = 120
LEAVE_TIMEOUT_S = 60
# Marks the networks this estate created, so an operator can tell them from hand-made ones.
ESTATE_LABEL = "swarm-estate.estate"

EnvValue = str | pulumi.Output[str]
HostCommand = command.local.Command | command.remote.Command


# --- pure helpers: scripts, command lines, environments --------------------------------------


@cache
def script_text(name: str) -> str:
    path = SCRIPTS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"host script {name!r} is missing from {SCRIPTS_DIR}")
    return path.read_text()


def script_hash(name: str) -> str:
    """Content hash carried as a trigger, so editing a script re-runs the commands that use it."""
    return hashlib.sha256(script_text(name).encode()).hexdigest()[:16]


def script_command(name: str, env: Mapping[str, str]) -> str:
    """The shell command line that runs script `name` with `env` on a host.

    Variables travel on the command line (`env K=V … sh -c '<script>'`), not through the SSH
    session: sshd drops variables it was not told to AcceptEnv.
    """
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"env {assigns} sh -c {shlex.quote(script_text(name))} {name}"


def in_container(container: str, line: str, *, interactive: bool = False) -> str:
    """Wrap a host command line so it runs inside a docker-in-docker node container (`interactive`: with the
    command's stdin)."""
    return f"docker exec {'-i ' if interactive else ''}{shlex.quote(container)} {line}"


def parse_kv(stdout: str) -> dict[str, str]:
    """`key=value` lines of a script's output (other lines are ignored)."""
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            out[key.strip()] = value.strip()
    return out


def labels_arg(labels: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def init_env(spec: EstateSpec, node: Node) -> dict[str, str]:
    env = {"ADVERTISE_ADDR": str(node.address), "DATA_PATH_PORT": str(spec.swarm.data_path_port)}
    if spec.swarm.default_addr_pool:
        env["DEFAULT_ADDR_POOL"] = " ".join(str(p) for p in spec.swarm.default_addr_pool)
    if spec.swarm.default_addr_pool_mask_length is not None:
        env["DEFAULT_ADDR_POOL_MASK_LENGTH"] = str(spec.swarm.default_addr_pool_mask_length)
    return env


def join_env(spec: EstateSpec, node: Node, first: Node) -> dict[str, str]:
    """Everything the join script needs except the token and the cluster id (Outputs)."""
    return {
        "ADVERTISE_ADDR": str(node.address),
        "MANAGER_ADDR": str(first.address),
        "MANAGER_ADDRS": " ".join(str(m.address) for m in spec.managers),
    }


def node_env(spec: EstateSpec, node: Node) -> dict[str, str]:
    """The declared state of one node, for swarm-node.sh (NODE, the node id, is added later)."""
    return {
        "ROLE": node.role,
        "AVAILABILITY": node.availability,
        "LABELS": labels_arg(node.labels),
        "OWNED_PREFIXES": " ".join(spec.swarm.owned_label_prefixes),
        "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
        "DISSOLVE": dissolve(spec),
    }


def dissolve(spec: EstateSpec) -> str:
    """Whether the last manager may dissolve the swarm when it is removed (a whole-estate destroy)."""
    return "true" if spec.swarm.dissolve_on_destroy else "false"


def removal_env(spec: EstateSpec, node: Node) -> dict[str, str]:
    return {
        "NODE_ADDR": str(node.address),
        "NODE_NAME": node.name,
        "LEAVE_TIMEOUT": str(LEAVE_TIMEOUT_S),
        "DISSOLVE": dissolve(spec),
    }


def observe_command(spec: EstateSpec, record: HostRecord) -> str:
    """A command for this machine that prints the swarm's nodes as the first manager sees them (read-only),
    or nothing when it cannot: no swarm yet, or the manager out of reach."""
    line = script_command("swarm-observe.sh", {})
    if record.container is not None:
        return f"{in_container(record.container, line)} 2>/dev/null || true"
    ssh = " ".join(["ssh", *SSH_OPTIONS, "-p", str(spec.ssh.port), f"{record.node.ssh_user}@{record.node.address}"])
    return f"{ssh} {shlex.quote(line)} 2>/dev/null || true"


def observed_nodes(stdout: str | None) -> dict[str, dict]:
    """`docker node inspect` objects by the address each node advertises (what the estate joined it with)."""
    nodes: dict[str, dict] = {}
    for line in (stdout or "").splitlines():
        try:
            node = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(node, dict) and node.get("Status", {}).get("Addr"):
            nodes[node["Status"]["Addr"]] = node
    return nodes


def drift(spec: EstateSpec, node: Node, observed: Mapping[str, dict]) -> list[str]:
    """How a node the swarm knows differs from what the estate declares and swarm-node.sh applies: its
    declared labels, labels the estate owns but does not declare, the bookkeeping label, availability and role.
    Labels others set are not drift; a node not (yet) in the swarm is the join's business."""
    seen = observed.get(str(node.address))
    if seen is None:
        return []
    nspec = seen.get("Spec", {})
    labels: dict[str, str] = nspec.get("Labels") or {}
    reasons = [
        f"label {k}={v} is {'missing' if k not in labels else repr(labels[k])}"
        for k, v in sorted(node.labels.items())
        if labels.get(k) != v
    ]
    previous = set(filter(None, labels.get(BOOKKEEPING_LABEL, "").split(",")))
    owned_prefixes = tuple(spec.swarm.owned_label_prefixes)
    reasons += [
        f"label {k} is set but not declared"
        for k in sorted(labels)
        if k != BOOKKEEPING_LABEL
        and k not in node.labels
        and (k in previous or (owned_prefixes and k.startswith(owned_prefixes)))
    ]
    if labels.get(BOOKKEEPING_LABEL, "") != ",".join(sorted(node.labels)):
        reasons.append(f"label {BOOKKEEPING_LABEL} does not list the declared keys")
    if nspec.get("Availability") != node.availability:
        reasons.append(f"availability is {nspec.get('Availability')}, not {node.availability}")
    if nspec.get("Role") != node.role:
        reasons.append(f"role is {nspec.get('Role')}, not {node.role}")
    return reasons


def provider_host(spec: EstateSpec, record: HostRecord) -> str:
    """Where the swarm's docker provider reaches a manager engine."""
    if record.container is not None:
        return f"unix://{spec.docker.api_socket(spec.name)}"
    return f"ssh://{record.node.ssh_user}@{record.node.address}:{spec.ssh.port}"


def ipam_config(subnet: str) -> docker.NetworkIpamConfigArgs:
    """A subnet with the gateway Docker would give it (its first address), spelled out: a refresh reads the
    gateway back, and the provider would replace a network whose config lacks it."""
    return docker.NetworkIpamConfigArgs(subnet=subnet, gateway=str(next(ipaddress.ip_network(subnet).hosts())))


def overlay_network_args(spec: EstateSpec, overlay: Overlay) -> docker.NetworkArgs:
    return docker.NetworkArgs(
        name=overlay.name,
        driver="overlay",
        attachable=overlay.attachable,
        ipam_configs=[ipam_config(str(overlay.subnet))] if overlay.subnet else None,
        # The overlay driver reads `encrypted` as a flag: its presence turns IPsec on.
        options={"encrypted": "true"} if overlay.encrypted else None,
        labels=[docker.NetworkLabelArgs(label=ESTATE_LABEL, value=spec.name)],
    )


# --- the component ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterArgs:
    spec: EstateSpec
    hosts: Sequence[HostRecord]
    secrets: SecretSource


class Cluster(pulumi.ComponentResource):
    """The swarm over the hosts: membership converges to the model on every `pulumi up`."""

    cluster_id: pulumi.Output[str]
    manager_token: pulumi.Output[str]
    worker_token: pulumi.Output[str]
    node_ids: dict[str, pulumi.Output[str]]
    provider: docker.Provider
    public_network: docker.Network
    overlays: dict[str, docker.Network]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:swarm:Cluster", name, None, opts)
        self._name = name
        self._spec = spec = args.spec
        records = {r.node.name: r for r in args.hosts}
        if not spec.managers or spec.managers[0].name not in records:
            raise ValueError("the swarm layer needs a host record for the first manager of the model")
        missing = [n.name for n in spec.nodes if n.name not in records]
        if missing:
            raise ValueError(
                f"no host record for node(s) {', '.join(missing)}: the hosts layer must hand over every node"
            )
        first = records[spec.managers[0].name]
        self._manager = first
        # What the swarm looks like now, before this run changes anything: a node changed by hand shows up
        # as a drift of its membership, which this run then re-applies.
        seen = command.local.run(
            command=observe_command(spec, first),
            environment={"DOCKER_HOST": spec.docker.engine_host} if first.container is not None else None,
            logging=command.local.Logging.NONE,
        )
        self._observed = observed_nodes(seen.stdout)

        init = self._command(
            f"{name}-init",
            first,
            create=script_command("swarm-init.sh", init_env(spec, first.node)),
            triggers=[script_hash("swarm-init.sh")],
            depends_on=list(first.ready),
            secret_stdout=True,
        )
        init_out = init.stdout.apply(parse_kv)
        self.manager_token = pulumi.Output.secret(init_out.apply(lambda kv: kv.get("manager_token", "")))
        self.worker_token = pulumi.Output.secret(init_out.apply(lambda kv: kv.get("worker_token", "")))
        # The cluster id is no credential: unsecret it so it stays readable.
        self.cluster_id = pulumi.Output.unsecret(init_out.apply(lambda kv: kv.get("cluster_id", "")))

        # The first manager gets a join too (a no-op after init): every node then has the same
        # three resources, so reordering the managers only moves commands, never deletes a join.
        # Every other node's chain hangs off the first manager's membership: on a whole-estate
        # destroy (dependents go first) the others are drained, leave and are removed before the
        # first manager is, so it is the last manager when it dissolves the swarm.
        self.node_ids = {}
        anchor: list[pulumi.Resource] = []
        for node in [first.node, *(n for n in spec.nodes if n.name != first.node.name)]:
            joined = self._join(node, records[node.name], [init, *anchor])
            # A node id is no credential: unsecreted, the membership's commands and their errors stay readable.
            node_id = pulumi.Output.unsecret(joined.stdout.apply(lambda out: parse_kv(out).get("node_id", "")))
            membership = self._membership(node, node_id, joined)
            self.node_ids[node.name] = node_id
            anchor = anchor or [membership]

        self.provider = docker.Provider(
            f"{name}-provider",
            host=provider_host(spec, first),
            ssh_opts=SSH_OPTIONS if first.container is None else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[init]),
        )
        net_opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[init])
        self.public_network = docker.Network(
            f"{name}-net-{spec.public_network.name}", overlay_network_args(spec, spec.public_network), opts=net_opts
        )
        self.overlays = {
            o.name: docker.Network(f"{name}-net-{o.name}", overlay_network_args(spec, o), opts=net_opts)
            for o in spec.overlays
        }
        self.register_outputs(
            {
                "cluster_id": self.cluster_id,
                "manager_token": self.manager_token,
                "worker_token": self.worker_token,
                "node_ids": self.node_ids,
                "public_network": self.public_network.name,
            }
        )

    def _join(self, node: Node, record: HostRecord, after: list[pulumi.Resource]) -> HostCommand:
        spec, name = self._spec, self._name
        registration = self._command(
            f"{name}-{node.name}-registration",
            self._manager,
            create=script_command("swarm-manager-check.sh", {}),
            delete=script_command("swarm-node-rm.sh", removal_env(spec, node)),
            triggers=[script_hash("swarm-manager-check.sh"), script_hash("swarm-node-rm.sh")],
            depends_on=after,
        )
        token = self.manager_token if node.role == "manager" else self.worker_token
        # The token travels on stdin, the provider's secret-capable input: the command line stays readable in
        # previews (what will run on the node, and any change to it) and the token is never part of it.
        create = self.cluster_id.apply(
            lambda cid: script_command("swarm-join.sh", {**join_env(spec, node, self._manager.node), "CLUSTER_ID": cid})
        )
        return self._command(
            f"{name}-{node.name}-join",
            record,
            create=create,
            delete=script_command("swarm-leave.sh", {"DISSOLVE": dissolve(spec)}),
            triggers=[script_hash("swarm-join.sh"), script_hash("swarm-leave.sh")],
            depends_on=[registration, *record.ready],
            stdin=pulumi.Output.secret(token.apply(lambda t: t + "\n")),
            stdin_to_script=True,
        )

    def _membership(self, node: Node, node_id: pulumi.Output[str], joined: pulumi.Resource) -> HostCommand:
        env = node_env(self._spec, node)
        name = f"{self._name}-{node.name}-membership"
        reasons = drift(self._spec, node, self._observed)
        if reasons:
            pulumi.log.warn(f"node {node.name} differs from the estate ({'; '.join(reasons)}): this run re-applies "
                            "its labels, availability and role")
        return self._command(
            name,
            self._manager,
            create=node_id.apply(lambda nid: script_command("swarm-node.sh", {**env, "NODE": nid})),
            delete=node_id.apply(lambda nid: script_command("swarm-node-drain.sh", {**env, "NODE": nid})),
            triggers=[script_hash("swarm-node.sh"), script_hash("swarm-node-drain.sh")],
            depends_on=[joined],
            # A drift changes `stdin` (the script does not read it) to a new value, which makes the engine run
            # the update, that is the convergent script; otherwise `stdin` keeps whatever it last was.
            stdin=f"re-apply {uuid.uuid4()}: {'; '.join(reasons)}\n" if reasons else None,
            ignore_stdin=not reasons,
        )

    def _command(
        self,
        resource_name: str,
        record: HostRecord,
        *,
        create: EnvValue,
        triggers: list[str],
        depends_on: list[pulumi.Resource],
        delete: EnvValue | None = None,
        secret_stdout: bool = False,
        stdin: pulumi.Input[str] | None = None,
        stdin_to_script: bool = False,
        ignore_stdin: bool = False,
    ) -> HostCommand:
        """One host step. `update` repeats `create` so a trigger change re-runs the (idempotent)
        script in place; without it the provider would replace the resource and run its delete.
        `stdin_to_script`: the script reads `stdin` (a node container is then entered with `docker exec -i`)."""
        opts = pulumi.ResourceOptions(
            parent=self,
            depends_on=depends_on,
            additional_secret_outputs=["stdout"] if secret_stdout else None,
            ignore_changes=["stdin"] if ignore_stdin else None,
        )
        # Scripts say what they did on stderr; stdout may carry tokens.
        logging = "stderr" if secret_stdout else "stdoutAndStderr"
        if record.container is not None:
            container = record.container

            def wrap(line: EnvValue, interactive: bool = False) -> pulumi.Output[str]:
                entered = functools.partial(in_container, container, interactive=interactive)
                return pulumi.Output.from_input(line).apply(entered)

            return command.local.Command(
                resource_name,
                create=wrap(create, stdin_to_script),
                update=wrap(create, stdin_to_script),
                delete=None if delete is None else wrap(delete),
                stdin=stdin,
                environment={"DOCKER_HOST": self._spec.docker.engine_host},
                triggers=triggers,
                logging=logging,  # type: ignore[arg-type]
                opts=opts,
            )
        if record.connection is None:
            raise ValueError(f"host record of {record.node.name} has neither an SSH connection nor a container")
        return command.remote.Command(
            resource_name,
            connection=record.connection,
            create=create,
            update=create,
            delete=delete,
            stdin=stdin,
            triggers=triggers,
            logging=logging,  # type: ignore[arg-type]
            opts=opts,
        )
