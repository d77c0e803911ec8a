"""A systemd "existing host" image for the tests: what `substrate: existing` expects to find on a machine.

`host_image(engine)` is a debootstrapped Debian whose PID 1 is systemd, with sshd, Docker (docker.io's
docker.service + containerd.service), nftables, chrony and the rest of what `components/scripts/bootstrap-host.sh`
checks for already installed (the lab has no package mirror), a root login and an `ops` login with passwordless
sudo (what `components.hosts.root_shell` runs: `bash -s` as root, `sudo -n bash -s` as anyone else). Start it with
`Lab.add_node(..., image=host_image(engine), systemd=True)`: see `lab.SYSTEMD_NODE_ARGS` for the flags.

The container starts `lab-host-init` (below), which makes the cgroup hierarchies writable, leaves /proc/sys
read-only except /proc/sys/net, makes /etc/hostname the host's own file, gives the host its own SSH host keys and
machine id, and execs systemd.
Its root filesystem is cached like the node image's (`tools.images.node_rootfs_tarball`), keyed by this recipe.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from ipaddress import IPv4Network
from pathlib import Path

from tools.images import SUITE, DockerCli, debootstrap_tarball

# What a Debian server that runs Docker already has, and what the bootstrap of an existing host checks for:
# `components.cloudinit._packages` without a VM (nftables, chrony; docker.io for `engine.install: distro`, which
# `preinstalled` expects to find), and what bootstrap-host.sh runs (bash, systemctl, hostnamectl, usermod,
# dpkg-query, base64, cmp, awk, mountpoint: systemd, dbus and minbase). Not nfs-common: this kernel has neither
# nfs nor rpc_pipefs (/proc/filesystems), so an estate with NFS mounts cannot converge in the lab anyway.
HOST_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "kmod",
    "procps",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "sudo",
    "openssh-server",
    "docker.io",
    "containerd",
    "iptables",
    "nftables",
    "chrony",
)

OPS_USER = "ops"
OPS_UID = 1000
# Login users and their home directories: the lab puts its public key into each one's authorized_keys.
LOGIN_USERS = {"root": (0, 0, "/root"), OPS_USER: (OPS_UID, OPS_UID, f"/home/{OPS_USER}")}

INIT = "/usr/local/sbin/lab-host-init"
INIT_SCRIPT = """#!/bin/sh
# PID 1 of a lab "existing host" until it execs systemd (which then is PID 1 itself).
set -eu
# The engine mounts the cgroup v1 hierarchies read-only; systemd and the host's own dockerd create
# cgroups in them. The container has its own cgroup namespace: each hierarchy's root is this host's.
mount -o remount,rw /sys/fs/cgroup
for hierarchy in /sys/fs/cgroup/*; do
    mountpoint -q "$hierarchy" || continue
    mount -o remount,rw,bind "$hierarchy" 2>/dev/null || mount -o remount,rw "$hierarchy"
done
# /proc/sys is read-only (most of it is the machine's kernel, shared by every container), except the
# host's own network namespace: dockerd turns on forwarding, swarm's overlay networks set theirs.
if ! touch /proc/sys/net/ipv4/ip_forward 2>/dev/null; then
    mount --bind /proc/sys/net /proc/sys/net
    mount -o remount,bind,rw /proc/sys/net
fi
# /etc/hostname is the engine's bind mount, which hostnamectl cannot replace (EBUSY): make it the host's
# own file, on first boot with the name the engine gave it, on later boots as the host left it.
if grep -q ' /etc/hostname ' /proc/self/mountinfo; then
    name=$(cat /etc/hostname)
    umount /etc/hostname
    [ -s /etc/hostname ] || echo "$name" >/etc/hostname
fi
# Every host its own identity on first boot: the image carries no SSH host keys and no machine id.
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
[ -s /etc/machine-id ] || systemd-machine-id-setup >/dev/null 2>&1
exec /lib/systemd/systemd "$@"
"""

# Units that make no sense, or must not run, in a container on a shared kernel: masked (linked to /dev/null).
# None of them fails when left alone (getty's run on conditions that are false here, the kernel filesystems mount):
# they are masked so a lab host neither pretends to have terminals nor reaches into the machine's kernel.
MASKED_UNITS = {
    "getty@.service": "no virtual terminals in a container",
    "serial-getty@.service": "no serial console in a container",
    "console-getty.service": "the getty generator adds it in a container with a console: nobody logs in there",
    "getty-static.service": "no virtual terminals in a container",
    "sys-kernel-debug.mount": "debugfs is the machine's kernel's, not the host's",
    "sys-kernel-tracing.mount": "tracefs is the machine's kernel's: tracing set up here would trace everyone",
    "sys-kernel-config.mount": "configfs is the machine's kernel's",
    "sys-fs-fuse-connections.mount": "fusectl is the machine's kernel's",
    "proc-sys-fs-binfmt_misc.automount": "binfmt_misc registrations are the machine's kernel's",
    "proc-sys-fs-binfmt_misc.mount": "binfmt_misc registrations are the machine's kernel's",
    "systemd-binfmt.service": "binfmt_misc registrations are the machine's kernel's",
    "apt-daily.timer": "the lab has no package mirror: apt's daily run could only fail",
    "apt-daily-upgrade.timer": "the lab has no package mirror: apt's daily run could only fail",
}

# Files the image gets on top of the packages' own (path: (mode, content)).
HOST_FILES = {
    INIT: (0o755, INIT_SCRIPT),
    # Key logins only; root with a key, like an existing host the estate reaches as root.
    "/etc/ssh/sshd_config.d/lab.conf": (
        0o644,
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n",
    ),
    # What cloud-init gives the ops user on a VM (components/cloudinit.render_user_data): sudo without a password.
    f"/etc/sudoers.d/{OPS_USER}": (0o440, f"{OPS_USER} ALL=(ALL) NOPASSWD:ALL\n"),
    # The machine's clock is shared by every container: chronyd runs and syncs nothing to it (-x), and the
    # container has no CAP_SYS_TIME (chrony.service's condition on it is dropped).
    "/etc/systemd/system/chrony.service.d/lab.conf": (
        0o644,
        "[Unit]\nConditionCapability=\n\n[Service]\nExecStart=\nExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x\n",
    ),
}

# Bump when the build steps below change in a way the inputs do not show.
RECIPE_VERSION = "1"


def host_recipe_hash() -> str:
    digest = hashlib.sha256()
    for part in (
        RECIPE_VERSION,
        SUITE,
        "minbase",
        ",".join(HOST_PACKAGES),
        OPS_USER,
        str(OPS_UID),
        ",".join(sorted(MASKED_UNITS)),
    ):
        digest.update(part.encode() + b"\0")
    for path, (mode, content) in sorted(HOST_FILES.items()):
        digest.update(f"{path}\0{mode:o}\0{content}\0".encode())
    return digest.hexdigest()[:16]


def _customize(rootfs: Path) -> None:
    for path, (mode, content) in HOST_FILES.items():
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)
    units = rootfs / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    subprocess.run(
        [
            "chroot",
            str(rootfs),
            "useradd",
            "--create-home",
            "--uid",
            str(OPS_UID),
            "--user-group",
            "--shell",
            "/bin/bash",
            "--comment",
            "swarm-estate operator",
            OPS_USER,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # Identity is made per host at first boot (lab-host-init): never shared through the image.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/hostname").unlink(missing_ok=True)  # the build machine's name; lab-host-init writes the host's
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")


def host_rootfs_tarball() -> Path:
    """The cached root filesystem of the host image; debootstraps it when absent."""
    return debootstrap_tarball("host", HOST_PACKAGES, host_recipe_hash(), _customize)


def host_image(engine: DockerCli) -> str:
    """Import the host image into `engine` (once per engine) and return its reference.

    `container=docker` is in PID 1's environment (systemd's container mode), and `docker stop` sends
    SIGRTMIN+3, systemd's "halt": the host shuts down its units in order. `docker import` takes no
    STOPSIGNAL, so a one-line build on top of the imported root filesystem adds it.
    """
    ref = f"swarm-estate-host:{host_recipe_hash()}"
    if engine.run("image", "inspect", ref, check=False).returncode == 0:
        return ref
    rootfs_ref = f"{ref}-rootfs"
    engine.run(
        "import",
        "--change",
        "ENV container=docker",
        "--change",
        f'ENTRYPOINT ["{INIT}"]',
        str(host_rootfs_tarball()),
        rootfs_ref,
        timeout=600,
    )
    with tempfile.TemporaryDirectory(prefix="host-image-") as context:
        Path(context, "Dockerfile").write_text(f"FROM {rootfs_ref}\nSTOPSIGNAL SIGRTMIN+3\n")
        engine.run("build", "-q", "-t", ref, context, timeout=300, env={"DOCKER_BUILDKIT": "0"})
    engine.run("image", "rm", rootfs_ref, check=False)  # only the tag: the build's layers stay
    return ref


def operator_ssh(subnet: IPv4Network, key: Path, where: Path) -> dict[str, str]:
    """An SSH configuration that reaches the hosts of `subnet` with `key`, as an operator's ~/.ssh/config does
    (the docker provider's `ssh://` host and the drift check run `ssh`). OpenSSH reads ~/.ssh from the password
    database, not $HOME, so an `ssh` first on PATH passes it with -F: the machine's own ~/.ssh is left alone.
    Returns the environment to give the Pulumi CLI."""
    where.mkdir(parents=True, exist_ok=True)
    config = where / "ssh_config"
    config.write_text(
        f"Host {subnet.network_address.exploded.rsplit('.', 1)[0]}.*\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {where / 'known_hosts'}\n"
    )
    config.chmod(0o600)
    wrapper = where / "bin" / "ssh"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": str(wrapper.parent)}
