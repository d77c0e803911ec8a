"""Machine pieces the hosts layer and the L4 pair share: a KVM VM on a libvirt site, a machine that already exists,
how commands reach them over SSH, and the bootstrap that converges them (components/scripts/bootstrap-host.sh)."""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_libvirt as libvirt

from .model import EstateSpec, Node
from .render import cloudinit


@dataclass(frozen=True)
class HostRecord:
    """What the swarm layer needs of one node, whatever the substrate made it from.

    `connection` reaches the host over SSH (libvirt, existing); `container` names the
    docker-in-docker node container whose engine is reached with `docker exec` (docker
    substrate). `ready` holds the resources that finish the bootstrap: a join must depend
    on them, never on a sleep.
    """

    node: Node
    connection: command.remote.ConnectionArgs | None
    container: str | None
    ready: tuple[pulumi.Resource, ...]


# --- how commands reach a host ----------------------------------------------------------------

BOOTSTRAP_SCRIPT = Path(__file__).parent / "scripts" / "bootstrap-host.sh"
SECRET_FILES_SCRIPT = Path(__file__).parent / "scripts" / "secret-files.sh"
# First boot: the image boots, cloud-init installs the engine and packages. Generous, but bounded.
CLOUD_INIT_WAIT_SECONDS = 1200
SSH_DIAL_ATTEMPTS = 60
SSH_DIAL_TIMEOUT_SECONDS = 10
GIB = 1024**3


def ssh_connection(
    spec: EstateSpec, address: str, user: str, private_key: pulumi.Input[str]
) -> command.remote.ConnectionArgs:
    # A new VM refuses SSH until it has booted: keep dialling for a bounded while.
    return command.remote.ConnectionArgs(
        host=address,
        port=spec.ssh.port,
        user=user,
        private_key=private_key,
        dial_error_limit=SSH_DIAL_ATTEMPTS,
        per_dial_timeout=SSH_DIAL_TIMEOUT_SECONDS,
    )


def bootstrap_stdin(env: dict[str, str], wait_seconds: int | None = None) -> str:
    """The script with its inputs exported in front: sshd's AcceptEnv would drop real SSH env vars."""
    if wait_seconds is not None:
        env = {**env, "SE_WAIT_SECONDS": str(wait_seconds)}
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))
    return exports + BOOTSTRAP_SCRIPT.read_text()


def root_shell(user: str) -> str:
    return "bash -s" if user == "root" else "sudo -n bash -s"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Bootstrap:
    """What converges a host: the script's stdin and a trigger that changes with it, both readable, so a
    reviewer sees in a preview every file and setting a host gets; and apart from them the host's secret files
    (`secret_files_stdin` of them, a Pulumi secret), installed first by their own step, which reloads
    `secret_units` when one changed."""

    stdin: pulumi.Input[str]
    trigger: pulumi.Input[str]
    secret_files: pulumi.Input[str] | None = None
    secret_units: tuple[str, ...] = ()


def secret_files_stdin(files: Sequence[cloudinit.HostFile]) -> str:
    return "".join(f"{f.path} {f.permissions} {base64.b64encode(f.content.encode()).decode()}\n" for f in files)


def converge(
    name: str,
    parent: pulumi.Resource,
    connection: command.remote.ConnectionArgs,
    user: str,
    bootstrap: Bootstrap,
    depends_on: Sequence[pulumi.Resource],
    triggers: Sequence[pulumi.Input[str]] = (),
) -> command.remote.Command:
    """The host's secret files (when it has any), then its bootstrap: the step that says the host is ready."""
    after = list(depends_on)
    if bootstrap.secret_files is not None:
        script = SECRET_FILES_SCRIPT.read_text()
        line = f"sh -c {shlex.quote(script)} secret-files.sh {' '.join(bootstrap.secret_units)}".rstrip()
        run = line if user == "root" else f"sudo -n {line}"
        after.append(
            command.remote.Command(
                f"{name}-secret-files",
                connection=connection,
                create=run,
                update=run,  # a new secret is written in place (no delete: the bootstrap's files stay)
                stdin=pulumi.Output.secret(bootstrap.secret_files),
                triggers=list(triggers),
                logging=command.remote.Logging.STDERR,
                opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
            )
        )
    return command.remote.Command(
        name,
        connection=connection,
        create=root_shell(user),
        stdin=bootstrap.stdin,
        triggers=[*triggers, bootstrap.trigger],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=after),
    )


def bootstrap_of(
    spec: EstateSpec, profile: cloudinit.HostProfile, user: str, wait_seconds: int | None = None
) -> Bootstrap:
    stdin = bootstrap_stdin(cloudinit.bootstrap_environment(spec, profile, user=user), wait_seconds)
    return Bootstrap(stdin=stdin, trigger=content_hash(stdin))


# --- libvirt ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """One VM to build: a swarm node or an L4 node."""

    name: str
    address: str
    hypervisor: str
    vcpu: int
    memory_mib: int
    disk_gib: int
    interface: str = "eth0"


@dataclass
class LibvirtSite:
    """Per hypervisor: its provider, the base image volume and the network the NICs attach to."""

    providers: dict[str, libvirt.Provider]
    base_volumes: dict[str, libvirt.Volume]
    networks: dict[str, libvirt.Network]
    network_names: dict[str, str]
    pools: dict[str, str]
    # The last upload (base image, cloud-init disk) made on each hypervisor: the provider's libvirt client
    # (go-libvirt) deadlocks when two uploads stream at once (seen under the real engine: both hang for good),
    # so each upload waits for the one before it on the same hypervisor. They take seconds.
    last_upload: dict[str, pulumi.Resource] = field(default_factory=dict)

    def upload_after(self, hypervisor: str) -> list[pulumi.Resource]:
        last = self.last_upload.get(hypervisor)
        return [last] if last is not None else []


def build_site(spec: EstateSpec, name: str, parent: pulumi.Resource | None) -> LibvirtSite:
    site = LibvirtSite({}, {}, {}, {}, {})
    image = spec.base_image
    net = spec.node_network
    for hv in spec.hypervisors:
        provider = libvirt.Provider(f"{name}-{hv.name}", uri=hv.uri, opts=pulumi.ResourceOptions(parent=parent))
        site.providers[hv.name] = provider
        site.pools[hv.name] = hv.pool
        site.network_names[hv.name] = hv.network or net.name
        opts = pulumi.ResourceOptions(parent=parent, provider=provider)
        if image.volume is None:
            site.base_volumes[hv.name] = site.last_upload[hv.name] = libvirt.Volume(
                f"{name}-{hv.name}-base",
                name=f"{spec.name}-{image.name}.{image.format}",
                pool=hv.pool,
                source=image.url,
                format=image.format,
                opts=opts,
            )
        if net.mode == "nat":
            site.networks[hv.name] = libvirt.Network(
                f"{name}-{hv.name}-network",
                name=net.name,
                mode="nat",
                addresses=[str(net.subnet)],
                # Addresses are fixed by cloud-init's network config, not leased.
                dhcp=libvirt.NetworkDhcpArgs(enabled=False),
                autostart=True,
                opts=opts,
            )
        elif net.mode == "bridge":
            site.networks[hv.name] = libvirt.Network(
                f"{name}-{hv.name}-network", name=net.name, mode="bridge", bridge=net.bridge, autostart=True, opts=opts
            )
    return site


@dataclass(frozen=True)
class VirtualMachineArgs:
    spec: EstateSpec
    machine: Machine
    site: LibvirtSite
    user_data: pulumi.Input[str]
    connection: command.remote.ConnectionArgs
    ssh_user: str
    bootstrap: Bootstrap
    # Converge only after these: see `Hosts` on rolling changes one host at a time.
    after: tuple[pulumi.Resource, ...] = ()


class VirtualMachine(pulumi.ComponentResource):
    """A KVM domain on one hypervisor: CoW root disk over the base image, cloud-init disk, NIC, agent.

    Its `ready` command waits (bounded) for the marker cloud-init writes at the end of the
    bootstrap, then converges the host again over SSH: later changes of the host profile arrive
    this way, since the cloud-init disk is only read on first boot.
    """

    domain_id: pulumi.Output[str]
    address: pulumi.Output[str]

    def __init__(self, name: str, args: VirtualMachineArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:hosts:VirtualMachine", name, None, opts)
        spec, m, site = args.spec, args.machine, args.site
        provider = site.providers[m.hypervisor]
        pool = site.pools[m.hypervisor]
        in_site = pulumi.ResourceOptions(parent=self, provider=provider)
        protected = pulumi.ResourceOptions.merge(in_site, pulumi.ResourceOptions(protect=spec.protect))
        base = site.base_volumes.get(m.hypervisor)
        root = libvirt.Volume(
            f"{name}-root",
            name=f"{spec.name}-{m.name}.qcow2",
            pool=pool,
            format="qcow2",
            size=m.disk_gib * GIB,
            base_volume_id=base.id if base else None,
            base_volume_name=None if base else spec.base_image.volume,
            base_volume_pool=None if base else pool,
            opts=protected,
        )
        seed = libvirt.CloudInitDisk(
            f"{name}-cloudinit",
            name=f"{spec.name}-{m.name}-cloudinit.iso",
            pool=pool,
            user_data=args.user_data,
            meta_data=cloudinit.render_meta_data(spec, m.name),
            network_config=cloudinit.render_network_config(
                spec, IPv4Address(m.address), cloudinit.mac_address(spec, m.name), m.interface
            ),
            # Read on first boot only; replacing it would detach media from a running VM for nothing.
            opts=pulumi.ResourceOptions.merge(
                in_site,
                pulumi.ResourceOptions(
                    ignore_changes=["userData", "metaData", "networkConfig"], depends_on=site.upload_after(m.hypervisor)
                ),
            ),
        )
        site.last_upload[m.hypervisor] = seed
        network = site.networks.get(m.hypervisor)
        kind = next(h.domain_type for h in spec.hypervisors if h.name == m.hypervisor)
        domain = libvirt.Domain(
            f"{name}-domain",
            name=f"{spec.name}-{m.name}",
            type=kind,
            vcpu=m.vcpu,
            memory=m.memory_mib,
            # the host's own CPU under KVM; under TCG there is no host CPU to pass through: QEMU's default model
            cpu=libvirt.DomainCpuArgs(mode="host-passthrough") if kind == "kvm" else None,
            disks=[libvirt.DomainDiskArgs(volume_id=root.id)],
            cloudinit=seed.id,
            network_interfaces=[
                libvirt.DomainNetworkInterfaceArgs(
                    network_name=site.network_names[m.hypervisor],
                    # No `hostname`/`addresses`: those edit the network's DHCP hosts, which a bridge
                    # network has not; the fixed address comes from cloud-init's network config.
                    mac=cloudinit.mac_address(spec, m.name),
                )
            ],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_port="0", target_type="serial")],
            qemu_agent=True,
            autostart=True,
            opts=pulumi.ResourceOptions.merge(
                protected, pulumi.ResourceOptions(depends_on=[network] if network else [])
            ),
        )
        self.ready = converge(
            f"{name}-ready", self, args.connection, args.ssh_user, args.bootstrap, [domain, *args.after], [domain.id]
        )
        self.domain_id = domain.id
        self.address = pulumi.Output.from_input(m.address)
        self.register_outputs({"domain_id": self.domain_id, "address": self.address})


@dataclass(frozen=True)
class ExistingHostArgs:
    host: str
    connection: command.remote.ConnectionArgs
    ssh_user: str
    bootstrap: Bootstrap
    after: tuple[pulumi.Resource, ...] = ()


class ExistingHost(pulumi.ComponentResource):
    """A machine that already exists (bare metal, another team's VM), converged over SSH."""

    address: pulumi.Output[str]

    def __init__(self, name: str, args: ExistingHostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:hosts:ExistingHost", name, None, opts)
        self.bootstrap = converge(
            f"{name}-bootstrap", self, args.connection, args.ssh_user, args.bootstrap, list(args.after)
        )
        self.address = pulumi.Output.from_input(args.host)
        self.register_outputs({"address": self.address})
