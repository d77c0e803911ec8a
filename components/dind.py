"""The docker substrate: each node is a docker-in-docker container on an engine you already have.

The same swarm, L7 and stack code as production then runs against these nodes; commands on a
node run with `docker exec` (see HostRecord.container), so no SSH server is needed in the image.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from .machines import HostRecord
from .model import EstateSpec, Node

SCRIPTS = Path(__file__).resolve().parent / "scripts"
NODE_ENTRYPOINT = "/usr/local/bin/swarm-estate-node"
API_SOCKET_DIR = "/run/swarm-estate"  # in the first manager: its engine socket for the machine running the estate
READY_TIMEOUT_S = 120
# What hosts that refuse --privileged still grant (docker run --cap-add ALL --cap-drop SYS_RESOURCE):
# the provider has no capability "ALL", so list the ones dockerd, runc and iptables use. Named as Docker
# reports them (CAP_…): a refresh reads them back so, and any other spelling would replace every node.
NODE_CAPABILITIES = [
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
]


def container_name(spec: EstateSpec, node: Node) -> str:
    return f"{spec.name}-{node.name}"


def published_ports(spec: EstateSpec, node: Node) -> list[tuple[int, int]]:
    """(127.0.0.1 port, node port) pairs: L7 on L7 nodes. (The swarm API is a unix socket: `api_socket`.)"""
    ports = []
    l7_nodes = spec.l7_nodes()
    if node in l7_nodes:
        i = l7_nodes.index(node)
        ports.append((spec.docker.l7_http_port + i, spec.l7.http_port))
        ports.append((spec.docker.l7_https_port + i, spec.l7.https_port))
    return ports


def l7_entrypoints(spec: EstateSpec) -> list[str]:
    """Where `curl -H 'Host: <name>'` reaches the L7 HAProxy on each L7 node."""
    return [f"http://127.0.0.1:{spec.docker.l7_http_port + i}" for i in range(len(spec.l7_nodes()))]


def l7_https_entrypoints(spec: EstateSpec) -> list[str]:
    """Where TLS with the public name as server name reaches L7 on each L7 node."""
    return [f"https://127.0.0.1:{spec.docker.l7_https_port + i}" for i in range(len(spec.l7_nodes()))]


def api_dir_script(directory: str) -> str:
    """Make `directory` (and its parent) this user's own, mode 0700; fail if another user owns it. Twice: no change."""
    d = shlex.quote(directory)
    parent = shlex.quote(os.path.dirname(directory))
    return (
        f"set -eu; for dir in {parent} {d}; do mkdir -p \"$dir\"; "
        'if [ "$(stat -c %u "$dir")" != "$(id -u)" ]; then '
        'echo "$dir belongs to another user: it would hold your swarm\'s API socket; remove it or choose '
        'docker.api_socket_dir" >&2; exit 1; fi; '
        '[ "$(stat -c %a "$dir")" = 700 ] || chmod 700 "$dir"; done'
    )


def ready_script(container: str) -> str:
    # Bounded: a node whose engine never answers fails the update with a clear message.
    return (
        f"for i in $(seq {READY_TIMEOUT_S}); do docker exec {container} docker info >/dev/null 2>&1 && exit 0; "
        f"sleep 1; done; echo 'engine in {container} did not answer within {READY_TIMEOUT_S}s' >&2; exit 1"
    )


def load_images_script(refs: list[str], container: str) -> str:
    """`docker save | docker load` from the outer engine into one node: no registry involved."""
    quoted = " ".join(shlex.quote(r) for r in refs)
    return f"docker save {quoted} | docker exec -i {shlex.quote(container)} docker load -q"


@dataclass(frozen=True)
class DockerNodesArgs:
    spec: EstateSpec


class DockerNodes(pulumi.ComponentResource):
    records: list[HostRecord]
    swarm_api: pulumi.Output[str]
    l7_entrypoints: pulumi.Output[list[str]]
    l7_https_entrypoints: pulumi.Output[list[str]]

    def __init__(self, name: str, args: DockerNodesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:hosts:DockerNodes", name, None, opts)
        spec = args.spec
        engine = spec.docker
        child = pulumi.ResourceOptions(parent=self)
        provider = docker.Provider(f"{name}-engine", host=engine.engine_host, opts=child)
        on_engine = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = [docker.NetworkLabelArgs(label="swarm-estate.estate", value=spec.name)]
        network = docker.Network(
            f"{name}-network",
            name=f"{spec.name}-{spec.node_network.name}",
            driver="bridge",
            ipam_configs=[
                docker.NetworkIpamConfigArgs(
                    subnet=str(spec.node_network.subnet), gateway=str(spec.node_network.effective_gateway())
                )
            ],
            labels=labels,
            opts=on_engine,
        )
        image = docker.RemoteImage(f"{name}-image", name=engine.image, keep_locally=True, opts=on_engine)
        entrypoint = (SCRIPTS / "dind-node.sh").read_text()
        # The image IDs are the triggers of each node's load: a rebuilt image is loaded again.
        preloads = [
            docker.RemoteImage(f"{name}-preload-{i}", name=ref, keep_locally=True, opts=on_engine)
            for i, ref in enumerate(engine.preload_images)
        ]
        socket = engine.api_socket(spec.name)
        # The directory the first manager's engine socket appears in: this user's alone, made before the container
        # mounts it (or Docker would make it, root's and open), refused if someone else made it first.
        api_dir = command.local.Command(
            f"{name}-api-dir",
            create=api_dir_script(os.path.dirname(socket)),
            delete=f"rm -f {shlex.quote(socket)}; rmdir {shlex.quote(os.path.dirname(socket))} 2>/dev/null || true",
            opts=child,
        )
        self.records = []
        for node in spec.nodes:
            cname = container_name(spec, node)
            first = node == spec.managers[0]
            volume = docker.Volume(
                f"{name}-{node.name}-data",
                name=f"{cname}-docker",
                labels=[docker.VolumeLabelArgs(label="swarm-estate.estate", value=spec.name)],
                opts=on_engine,
            )
            container = docker.Container(
                f"{name}-{node.name}",
                name=cname,
                hostname=node.name,
                image=image.image_id,
                entrypoints=[NODE_ENTRYPOINT],
                # docker's own init as PID 1 reaps what dockerd, sshd and `docker exec` leave behind
                init=True,
                uploads=[docker.ContainerUploadArgs(file=NODE_ENTRYPOINT, content=entrypoint, executable=True)],
                envs=[
                    f"NODE_PRIVILEGED={'true' if engine.privileged else 'false'}",
                    # the socket's group: the user running the estate reaches it without being root
                    *([f"NODE_API_SOCKET={API_SOCKET_DIR}/docker.sock", f"NODE_API_GROUP={os.getgid()}"] if first
                      else []),
                ],
                privileged=engine.privileged,
                capabilities=None
                if engine.privileged
                else docker.ContainerCapabilitiesArgs(adds=NODE_CAPABILITIES, drops=["CAP_SYS_RESOURCE"]),
                security_opts=[] if engine.privileged else ["seccomp=unconfined", "apparmor=unconfined"],
                networks_advanced=[
                    docker.ContainerNetworksAdvancedArgs(name=network.name, ipv4_address=str(node.address))
                ],
                volumes=[
                    docker.ContainerVolumeArgs(volume_name=volume.name, container_path="/var/lib/docker"),
                    *([docker.ContainerVolumeArgs(host_path=os.path.dirname(socket), container_path=API_SOCKET_DIR)]
                      if first else []),
                ],
                ports=[
                    docker.ContainerPortArgs(internal=inner, external=outer, ip="127.0.0.1")
                    for outer, inner in published_ports(spec, node)
                ],
                restart="unless-stopped",
                labels=[
                    docker.ContainerLabelArgs(label="swarm-estate.estate", value=spec.name),
                    docker.ContainerLabelArgs(label="swarm-estate.role", value=node.role),
                ],
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[api_dir] if first else []),
            )
            ready = command.local.Command(
                f"{name}-{node.name}-ready",
                create=ready_script(cname),
                environment={"DOCKER_HOST": engine.engine_host},
                triggers=[container.id],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[container]),
            )
            steps: tuple[pulumi.Resource, ...] = (ready,)
            if preloads:
                steps += (
                    command.local.Command(
                        f"{name}-{node.name}-images",
                        create=load_images_script(engine.preload_images, cname),
                        # pipefail: a failed save must fail the step, not load an empty stream
                        interpreter=["/bin/bash", "-o", "pipefail", "-c"],
                        environment={"DOCKER_HOST": engine.engine_host},
                        triggers=[container.id, *(image.image_id for image in preloads)],
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[ready]),
                    ),
                )
            self.records.append(HostRecord(node=node, connection=None, container=cname, ready=steps))
        self.swarm_api = pulumi.Output.from_input(f"unix://{socket}")
        self.l7_entrypoints = pulumi.Output.from_input(l7_entrypoints(spec))
        self.l7_https_entrypoints = pulumi.Output.from_input(l7_https_entrypoints(spec))
        self.register_outputs(
            {
                "swarm_api": self.swarm_api,
                "l7_entrypoints": self.l7_entrypoints,
                "l7_https_entrypoints": self.l7_https_entrypoints,
            }
        )
