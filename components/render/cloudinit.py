"""Pure renderers for what makes a machine a swarm-ready Docker host: cloud-init and its building blocks.

The same building blocks (files, packages, fstab lines) feed two deliveries: the `#cloud-config`
a VM boots with, and the manifest `scripts/bootstrap-host.sh` converges over SSH on existing hosts
(and on VMs after boot, for day-2 changes). One source of truth, so both substrates end up equal.
Nothing here may contain a secret: these texts are what the synth writes and reviewers read.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from ipaddress import IPv4Address

import yaml

from ..model import EstateSpec, Node

STATE_DIR = "/var/lib/swarm-estate"
READY_MARKER = f"{STATE_DIR}/ready"
FIREWALL_RULES = "/etc/swarm-estate/firewall.nft"
FIREWALL_UNIT = "/etc/systemd/system/swarm-estate-firewall.service"
FIREWALL_TABLE = "swarm_estate"
DAEMON_JSON = "/etc/docker/daemon.json"
DOCKER_REPO_RHEL = "/etc/yum.repos.d/docker-ce.repo"
# Docker's API ports: the engine must only ever listen on its unix socket.
DOCKER_API_PORTS = (2375, 2376)


@dataclass(frozen=True)
class HostFile:
    path: str
    content: str
    permissions: str = "0644"


@dataclass(frozen=True)
class Mount:
    device: str
    target: str
    fstype: str
    options: str

    def fstab_line(self) -> str:
        return f"{self.device} {self.target} {self.fstype} {self.options} 0 0"


@dataclass(frozen=True)
class Service:
    """A systemd unit kept enabled and running, restarted when a file under `watches` changes."""

    unit: str
    watches: tuple[str, ...] = ()
    # Reload (graceful: HAProxy keeps its connections) instead of restart on a change.
    reload: bool = False

    def word(self) -> str:
        return f"{self.unit}={','.join(self.watches)}"


@dataclass(frozen=True)
class HostProfile:
    """Everything one host needs beyond the common base (user, time sync, ready marker)."""

    hostname: str
    packages: tuple[str, ...] = ()
    files: tuple[HostFile, ...] = ()
    mounts: tuple[Mount, ...] = ()
    # systemd units to enable and (re)start once packages and files are in place.
    services: tuple[Service, ...] = ()
    docker_user: bool = False
    # The packages are in the image already and no mirror answers (base_image.offline): install nothing.
    offline: bool = False

    def digest(self) -> str:
        """Content hash of the profile: changes whenever anything the host receives changes."""
        blob = json.dumps(
            [self.hostname, self.packages, [(f.path, f.content, f.permissions) for f in self.files],
             [m.fstab_line() for m in self.mounts], [(s.word(), s.reload) for s in self.services], self.docker_user],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


# --- building blocks ---------------------------------------------------------------------------


def daemon_json(spec: EstateSpec) -> str:
    config: dict[str, object] = {"log-driver": spec.engine.log_driver}
    if spec.engine.log_opts:
        config["log-opts"] = dict(sorted(spec.engine.log_opts.items()))
    if spec.engine.live_restore:
        config["live-restore"] = True
    # The registry is trusted through its CA (certs.d) by default; plain HTTP only on explicit request.
    if spec.registry.enabled and spec.registry.insecure and spec.registry.dns_name:
        config["insecure-registries"] = [spec.registry.dns_name]
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def registry_ca_file(spec: EstateSpec) -> HostFile | None:
    reg = spec.registry
    if not (reg.enabled and reg.dns_name and reg.ca_certificate and not reg.insecure):
        return None
    pem = reg.ca_certificate if reg.ca_certificate.endswith("\n") else reg.ca_certificate + "\n"
    return HostFile(f"/etc/docker/certs.d/{reg.dns_name}/ca.crt", pem)


def firewall_rules(spec: EstateSpec) -> str:
    """nftables table of our own: Docker keeps its iptables chains, we only restrict the swarm ports.

    A separate table with an accepting policy never breaks Docker's rules or sshd; packets to the
    swarm control and data ports are dropped unless they come from the node subnet, and the
    Docker API ports are dropped from everywhere.
    """
    subnet = spec.node_network.subnet
    data_port = spec.swarm.data_path_port
    api = ", ".join(str(p) for p in DOCKER_API_PORTS)
    return "\n".join(
        [
            "#!/usr/sbin/nft -f",
            "# swarm-estate: swarm ports only from the node subnet, never the Docker API on TCP.",
            f"table inet {FIREWALL_TABLE}",
            f"delete table inet {FIREWALL_TABLE}",
            f"table inet {FIREWALL_TABLE} {{",
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            '    iifname "lo" accept',
            f"    ip saddr {subnet} tcp dport {{ 2377, 7946 }} accept",
            f"    ip saddr {subnet} udp dport {{ 7946, {data_port} }} accept",
            "    tcp dport { 2377, 7946 } drop",
            f"    udp dport {{ 7946, {data_port} }} drop",
            f"    tcp dport {{ {api} }} drop",
            "  }",
            "}",
            "",
        ]
    )


def firewall_unit() -> str:
    return "\n".join(
        [
            "[Unit]",
            "Description=swarm-estate firewall (swarm ports only from the node subnet)",
            "Wants=network-pre.target",
            "Before=network-pre.target docker.service",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart=/usr/sbin/nft -f {FIREWALL_RULES}",
            f"ExecReload=/usr/sbin/nft -f {FIREWALL_RULES}",
            f"ExecStop=/usr/sbin/nft delete table inet {FIREWALL_TABLE}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def docker_ce_repo() -> str:
    return "\n".join(
        [
            "[docker-ce-stable]",
            "name=Docker CE Stable",
            "baseurl=https://download.docker.com/linux/centos/$releasever/$basearch/stable",
            "enabled=1",
            "gpgcheck=1",
            "gpgkey=https://download.docker.com/linux/centos/gpg",
            "",
        ]
    )


def nfs_mounts(spec: EstateSpec, node: Node) -> tuple[Mount, ...]:
    out = []
    for mount in spec.nfs.mounts:
        if node.role not in mount.roles:
            continue
        export = spec.nfs_export(mount.export)
        path = export.path.rstrip("/") or "/"
        if mount.subpath:
            path = f"{path.rstrip('/')}/{mount.subpath.strip('/')}"
        options = [f"nfsvers={export.version}", "_netdev", "nofail", "noatime", *export.options]
        out.append(Mount(f"{export.server}:{path}", mount.target, "nfs", ",".join(options)))
    return tuple(out)


def _packages(spec: EstateSpec, *, nfs: bool, vm: bool) -> tuple[str, ...]:
    debian = spec.base_image.family == "debian"
    pkgs = ["nftables", "chrony"] + (["qemu-guest-agent"] if vm else [])
    if spec.engine.install == "distro":
        pkgs += ["docker.io"] if debian else ["docker-ce", "docker-ce-cli", "containerd.io"]
    if nfs:
        pkgs.append("nfs-common" if debian else "nfs-utils")
    return tuple(pkgs)


def docker_host_profile(spec: EstateSpec, node: Node, *, vm: bool = True) -> HostProfile:
    """A swarm node: engine, daemon.json, registry trust, NFS mounts, firewall."""
    mounts = nfs_mounts(spec, node)
    files = [
        HostFile(DAEMON_JSON, daemon_json(spec)),
        HostFile(FIREWALL_RULES, firewall_rules(spec)),
        HostFile(FIREWALL_UNIT, firewall_unit()),
    ]
    ca = registry_ca_file(spec)
    if ca:
        files.append(ca)
    if spec.engine.install == "distro" and spec.base_image.family == "rhel":
        files.append(HostFile(DOCKER_REPO_RHEL, docker_ce_repo()))
    return HostProfile(
        hostname=node.name,
        packages=_packages(spec, nfs=bool(mounts), vm=vm),
        files=tuple(files),
        mounts=mounts,
        services=(
            Service("swarm-estate-firewall.service", (FIREWALL_RULES, FIREWALL_UNIT)),
            Service("chrony.service" if spec.base_image.family == "debian" else "chronyd.service"),
            Service("docker.service", ("/etc/docker/",)),
        ),
        docker_user=True,
        offline=spec.base_image.offline,
    )


# --- cloud-init ----------------------------------------------------------------------------------


def _literal_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _literal_str)


def _dump(doc: object) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def ready_marker_command(profile: HostProfile, digest: str) -> str:
    """Write the marker only if the host really is ready: runcmd goes on after a failed step."""
    checks = []
    if profile.offline and profile.packages:
        # Nothing was installed: the marker says the image had what the host needs.
        # every package installed ("ii"; dpkg still lists removed ones), or on RPM systems known to rpm
        names = " ".join(profile.packages)
        want = "ii " * len(profile.packages)
        checks.append(
            f"{{ [ \"$(dpkg-query -W -f='${{db:Status-Abbrev}}' {names} 2>/dev/null)\" = '{want}' ]"
            f" || rpm -q {names} >/dev/null 2>&1; }}"
        )
    if profile.services:
        checks.append("systemctl is-active --quiet " + " ".join(s.unit for s in profile.services))
    checks += [f"mountpoint -q {m.target}" for m in profile.mounts]
    checks.append(f"mkdir -p {STATE_DIR} && echo {digest} > {READY_MARKER}")
    return " && ".join(checks)


def render_user_data(spec: EstateSpec, profile: HostProfile, digest: str | None = None) -> str:
    """`#cloud-config` for one host. Bootstrap runs to the end before the ready marker appears.

    `digest` goes into the ready marker; give the redacted profile's when this one holds a secret,
    so the host never carries a hash of it.
    """
    user = spec.ssh.user
    doc: dict[str, object] = {
        "hostname": profile.hostname,
        "manage_etc_hosts": True,
        "users": [
            {
                "name": user,
                "gecos": "swarm-estate operator",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": list(spec.ssh.authorized_keys),
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
    }
    if not profile.offline:
        doc["package_update"] = True
        doc["packages"] = list(profile.packages)
    if profile.files:
        doc["write_files"] = [
            {"path": f.path, "content": f.content, "owner": "root:root", "permissions": f.permissions}
            for f in profile.files
        ]
    if profile.mounts:
        doc["mounts"] = [[m.device, m.target, m.fstype, m.options, "0", "0"] for m in profile.mounts]
    doc["ntp"] = {"enabled": True, "ntp_client": "chrony"}
    runcmd: list[list[str] | str] = [["systemctl", "daemon-reload"]]
    for service in profile.services:
        runcmd.append(["systemctl", "enable", service.unit])
        runcmd.append(["systemctl", "restart", service.unit])
    if profile.docker_user:
        runcmd.append(["usermod", "-aG", "docker", user])
    for m in profile.mounts:
        # mounts runs before packages (the NFS helper) are installed; mount again now they are.
        runcmd.append(["sh", "-c", f"mountpoint -q {m.target} || mount {m.target}"])
    runcmd.append(["sh", "-c", ready_marker_command(profile, digest or profile.digest())])
    doc["runcmd"] = runcmd
    return "#cloud-config\n" + _dump(doc)


def render_meta_data(spec: EstateSpec, hostname: str) -> str:
    return _dump({"instance-id": f"{spec.name}-{hostname}", "local-hostname": hostname})


def render_network_config(spec: EstateSpec, address: IPv4Address, mac: str, interface: str = "eth0") -> str:
    """Netplan v2: a fixed address on the NIC with the given MAC, renamed to a predictable name."""
    net = spec.node_network
    eth: dict[str, object] = {
        "match": {"macaddress": mac},
        "set-name": interface,
        "addresses": [f"{address}/{net.subnet.prefixlen}"],
        "routes": [{"to": "0.0.0.0/0", "via": str(net.effective_gateway())}],
    }
    if net.dns_servers:
        eth["nameservers"] = {"addresses": [str(s) for s in net.dns_servers]}
    return _dump({"version": 2, "ethernets": {interface: eth}})


def mac_address(spec: EstateSpec, hostname: str) -> str:
    """Stable locally administered MAC (KVM's 52:54:00 prefix) from estate and host name."""
    digest = hashlib.sha256(f"{spec.name}/{hostname}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


# --- the same profile, as the environment of scripts/bootstrap-host.sh ----------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def bootstrap_environment(
    spec: EstateSpec, profile: HostProfile, digest: str | None = None, user: str | None = None
) -> dict[str, str]:
    """Inputs of bootstrap-host.sh: one `path mode base64` line per file, one fstab line per mount.

    `user` is the login the commands arrive as (existing hosts have their own); it joins the docker group.
    """
    return {
        "SE_HOSTNAME": profile.hostname,
        "SE_USER": user or spec.ssh.user,
        "SE_PACKAGES": " ".join(profile.packages),
        "SE_OFFLINE": "1" if profile.offline else "",
        "SE_FILES": "\n".join(f"{f.path} {f.permissions} {_b64(f.content)}" for f in profile.files),
        "SE_FSTAB": "\n".join(m.fstab_line() for m in profile.mounts),
        "SE_SERVICES": " ".join(s.word() for s in profile.services),
        "SE_RELOAD": " ".join(s.unit for s in profile.services if s.reload),
        "SE_DOCKER_USER": "1" if profile.docker_user else "",
        "SE_DIGEST": digest or profile.digest(),
        "SE_MARKER": READY_MARKER,
    }
