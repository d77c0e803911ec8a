"""The L4 pair in front of the swarm: two HAProxy + keepalived hosts sharing one virtual IP, as VMs on the libvirt
site or as machines that exist. Their configs (components/render/l4.py) arrive through cloud-init on first boot
and are re-applied over SSH whenever they change, so a config change never replaces a VM.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from .config_secrets import SecretSource
from .machines import (
    CLOUD_INIT_WAIT_SECONDS,
    Bootstrap,
    ExistingHost,
    ExistingHostArgs,
    LibvirtSite,
    Machine,
    VirtualMachine,
    VirtualMachineArgs,
    bootstrap_stdin,
    content_hash,
    secret_files_stdin,
    ssh_connection,
)
from .model import EstateSpec
from .render.cloudinit import bootstrap_environment, render_user_data
from .render.l4 import SECRET_UNITS, l4_profile, l4_secret_files, render_haproxy, render_keepalived


def l4_machine(spec: EstateSpec, index: int) -> Machine:
    """The pair goes on two different hypervisors whenever there are two."""
    node, l4 = spec.l4.nodes[index], spec.l4
    names = [h.name for h in spec.hypervisors]
    hypervisor = node.hypervisor or names[index % len(names)]
    return Machine(node.name, str(node.address), hypervisor, l4.vcpu, l4.memory_mib, l4.disk_gib, l4.interface)


@dataclass(frozen=True)
class L4PairArgs:
    spec: EstateSpec
    secrets: SecretSource
    site: LibvirtSite | None
    private_key: pulumi.Input[str]


class L4Pair(pulumi.ComponentResource):
    """Two HAProxy + keepalived hosts sharing the virtual IP, as VMs or existing hosts."""

    virtual_ip: pulumi.Output[str]
    ready: list[command.remote.Command]

    def __init__(self, name: str, args: L4PairArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("swarm-estate:hosts:L4Pair", name, None, opts)
        spec = args.spec
        assert spec.l4.enabled and spec.l4.vrrp_auth_secret and spec.l4.virtual_ip, "the model checks the pair"
        password = args.secrets.get(spec.l4.vrrp_auth_secret)
        # what the hosts receive (all readable: the VRRP password travels apart), for the synth and the reviewers
        self.files: dict[str, str] = {"l4/haproxy.cfg": render_haproxy(spec)}
        # One member after the other: a reload on both at once could leave the virtual IP nowhere.
        self.ready = []
        for index in range(len(spec.l4.nodes)):
            self.ready.append(self._member(name, args, index, password, tuple(self.ready[-1:])))
        self.virtual_ip = pulumi.Output.from_input(str(spec.l4.virtual_ip))
        self.register_outputs({"virtual_ip": self.virtual_ip})

    def _member(
        self,
        name: str,
        args: L4PairArgs,
        index: int,
        password: pulumi.Output[str],
        after: tuple[pulumi.Resource, ...],
    ) -> command.remote.Command:
        spec, node, vm = args.spec, args.spec.l4.nodes[index], args.site is not None
        profile = l4_profile(spec, index, vm=vm)
        self.files[f"l4/keepalived-{node.name}.conf"] = render_keepalived(spec, index)
        wait = CLOUD_INIT_WAIT_SECONDS if vm else None
        stdin = bootstrap_stdin(bootstrap_environment(spec, profile), wait)
        bootstrap = Bootstrap(
            stdin=stdin,
            trigger=content_hash(stdin),
            secret_files=password.apply(lambda pw: secret_files_stdin(l4_secret_files(pw))),
            secret_units=SECRET_UNITS,
        )
        user = spec.ssh.user if vm else (node.ssh_user or spec.ssh.user)
        conn = ssh_connection(spec, str(node.address), user, args.private_key)
        child, opts = f"{name}-{node.name}", pulumi.ResourceOptions(parent=self)
        if args.site is None:
            host = ExistingHost(child, ExistingHostArgs(str(node.address), conn, user, bootstrap, after), opts)
            return host.bootstrap
        user_data = render_user_data(spec, profile, profile.digest())
        self.files[f"cloud-init/{node.name}.yaml"] = user_data
        machine = VirtualMachine(
            child,
            VirtualMachineArgs(spec, l4_machine(spec, index), args.site, user_data, conn, user, bootstrap, after),
            opts,
        )
        return machine.ready
