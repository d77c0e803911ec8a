"""Hosts layer: every swarm node becomes a bootstrapped Docker host, as a KVM VM or a machine that exists."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from .machines import (
    CLOUD_INIT_WAIT_SECONDS,
    ExistingHost,
    ExistingHostArgs,
    HostRecord,
    LibvirtSite,
    Machine,
    VirtualMachine,
    VirtualMachineArgs,
    bootstrap_of,
    ssh_connection,
)
from .model import EstateSpec, Node
from .render import cloudinit

# --- the layer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostsArgs:
    spec: EstateSpec
    private_key: pulumi.Input[str]
    # libvirt: the hypervisors' providers, base images and networks (the L4 pair's VMs use the same)
    site: LibvirtSite | None


WORKER_WAVES = 2


class Hosts(pulumi.ComponentResource):
    """Every swarm node of the estate as a bootstrapped Docker host (the docker substrate's nodes are
    components/dind.py's; the L4 pair in front is components/l4.py's).

    A day-2 change that restarts the engine (a new daemon.json) must never restart every manager,
    or every task, at once: managers converge one after the other, in the model's order; workers
    in WORKER_WAVES waves (worker i in wave i mod WORKER_WAVES), each wave after the previous one.
    A fixed number of waves keeps the graph's critical path independent of the worker count.
    """

    records: list[HostRecord]
    addresses: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: HostsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:hosts:Hosts", name, None, opts)
        spec, site, key = args.spec, args.site, args.private_key
        self.records = []
        self.files: dict[str, str] = {}  # each VM's cloud-init user data (the synth writes them)
        if spec.substrate in ("libvirt", "existing"):
            built: dict[str, HostRecord] = {}
            after: tuple[pulumi.Resource, ...] = ()
            for node in spec.managers:
                built[node.name] = self._host(f"{name}-{node.name}", spec, node, site, key, after)
                after = built[node.name].ready
            after = ()
            for wave in range(WORKER_WAVES):
                members = [n for n in spec.workers if n.index % WORKER_WAVES == wave]
                for node in members:
                    built[node.name] = self._host(f"{name}-{node.name}", spec, node, site, key, after)
                after = tuple(r for n in members for r in built[n.name].ready)
            self.records = [built[n.name] for n in spec.nodes]
        self.addresses = pulumi.Output.from_input({r.node.name: str(r.node.address) for r in self.records})
        self.register_outputs({"addresses": self.addresses})

    def _host(
        self,
        name: str,
        spec: EstateSpec,
        node: Node,
        site: LibvirtSite | None,
        key: pulumi.Input[str],
        after: tuple[pulumi.Resource, ...],
    ) -> HostRecord:
        address = str(node.address)
        opts = pulumi.ResourceOptions(parent=self)
        if site is not None:
            assert node.hypervisor, "the model places every libvirt node on a hypervisor"
            profile = cloudinit.docker_host_profile(spec, node, vm=True)
            user_data = cloudinit.render_user_data(spec, profile)
            self.files[f"cloud-init/{node.name}.yaml"] = user_data
            machine = Machine(node.name, address, node.hypervisor, node.vcpu, node.memory_mib, node.disk_gib)
            conn = ssh_connection(spec, address, spec.ssh.user, key)
            vm = VirtualMachine(
                name,
                VirtualMachineArgs(
                    spec,
                    machine,
                    site,
                    user_data,
                    conn,
                    spec.ssh.user,
                    bootstrap_of(spec, profile, spec.ssh.user, CLOUD_INIT_WAIT_SECONDS),
                    after,
                ),
                opts,
            )
            return HostRecord(node=node, connection=conn, container=None, ready=(vm.ready,))
        profile = cloudinit.docker_host_profile(spec, node, vm=False)
        conn = ssh_connection(spec, address, node.ssh_user, key)
        bootstrap = bootstrap_of(spec, profile, node.ssh_user)
        host = ExistingHost(name, ExistingHostArgs(address, conn, node.ssh_user, bootstrap, after), opts)
        return HostRecord(node=node, connection=conn, container=None, ready=(host.bootstrap,))
