"""An offline cloud image for the libvirt substrate, built from Debian packages without a registry or a download.

    sudo python -m tools.vm_image build --out DIR [--preload IMAGE.tar ...]

Debian bookworm with cloud-init (NoCloud), openssh, Docker, nfs-common, and HAProxy + keepalived for the L4 nodes:
every package the program's cloud-init and bootstrap ask for (`base_image.offline: true` estates install nothing).
It boots the way the production cloud image does: an MBR partition table, an ext4 root partition at 1 MiB labelled
`rootfs`, GRUB in the MBR and the gap after it, the kernel and initramfs inside the root filesystem, grown to the
VM's disk by cloud-init's growpart. So the program's domain (a plain disk, no kernel options) boots it unchanged.

Built without mounting anything (containers may not): `debootstrap` (cached as a tarball, like the node image's
root filesystem), `mke2fs -d` straight into the disk file at the partition's offset, `sfdisk` on the file, GRUB's
`grub-mkimage`, and the embedding grub-bios-setup would do, done here: grub-bios-setup itself refuses a disk
image file (it probes the device its own directory lives on). `grub-fstest` then reads the kernel through GRUB's
own drivers, so a disk GRUB cannot read fails here, not at boot.

`--preload` puts `docker save` archives into the image, loaded into the engine at every boot (the nodes of an
offline site reach no registry either): what the tests use for the L7 and demo images.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from tools.images import SUITE, cache_dir, debootstrap_tarball

PACKAGES = (
    "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "udev", "dbus", "libpam-systemd", "e2fsprogs",
    "openssh-server", "sudo", "cloud-init",
    "python3-cffi-backend",  # without it debootstrap's resolver leaves cloud-init unconfigured
    "cloud-guest-utils",  # growpart: the root partition takes the VM's whole disk
    "ifupdown",  # cloud-init's Debian renderer (eni) for the program's static network config
    "iproute2", "procps", "nftables", "chrony", "qemu-guest-agent",
    "docker.io", "nfs-common",
    "apparmor",  # the guest kernel enforces AppArmor: without apparmor_parser Docker starts no container
    "haproxy", "keepalived",  # the L4 nodes
)
# Bump when the steps below change in a way the inputs do not show.
RECIPE_VERSION = "1"
FS_LABEL = "rootfs"
SECTOR = 512
PART_START_SECTOR = 2048  # 1 MiB, as cloud images have it
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
# In core.img: what reads the partition and its ext4 up to /boot/grub, where the rest is loaded from.
CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_label", "serial",
                "terminal", "echo", "test")
PRELOAD_DIR = "/var/lib/swarm-estate/preload"
PRELOAD_UNIT = "swarm-estate-preload.service"
TOOLS = ("mke2fs", "e2fsck", "sfdisk", "grub-mkimage", "qemu-img")
HOST_PACKAGES = ("debootstrap", "e2fsprogs", "fdisk", "grub-pc-bin", "qemu-utils")
TIMEOUT_S = 900

# GRUB 2.06's i386-pc boot sector (grub-core/include/grub/i386/pc/boot.h): what grub-bios-setup fills in.
BOOT_BPB = slice(0x03, 0x5A)  # kept from the disk's own sector
BOOT_KERNEL_SECTOR = 0x5C  # u64: LBA of core.img's first sector
BOOT_DRIVE = 0x64  # 0xff: the drive the BIOS booted from
BOOT_DRIVE_CHECK = 0x66  # a 2-byte jump around the floppy probe, nop'ed for hard disks
BOOT_PARTITION_TABLE = slice(0x1B8, 0x1FE)  # disk signature and partition table, kept
BLOCKLIST = 12  # diskboot.img's trailing entry: u64 start, u16 sectors, u16 load segment
CORE_LOAD_SEGMENT = 0x820

PRELOAD_UNIT_TEXT = f"""[Unit]
Description=Load the container images this image carries (an offline site reaches no registry)
Requires=docker.service
After=docker.service
ConditionDirectoryNotEmpty={PRELOAD_DIR}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for f in {PRELOAD_DIR}/*.tar; do docker load -q -i "$f" || exit 1; done'

[Install]
WantedBy=multi-user.target
"""


def missing_tools() -> list[str]:
    found = [t for t in TOOLS if shutil.which(t) is None]
    return found + ([] if (GRUB_DIR / "boot.img").exists() else [str(GRUB_DIR / "boot.img")])


def _run(cmd: Sequence[str], *, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(cmd), input=input, capture_output=True, timeout=TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.decode()[-2000:]}")
    return result


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _recipe() -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, ",".join(PACKAGES), PRELOAD_UNIT_TEXT, *CORE_MODULES):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _configure(rootfs: Path) -> None:
    """What a cloud image has that debootstrap does not make: first-boot identity left to cloud-init."""
    for release in sorted(p.name for p in (rootfs / "lib/modules").iterdir()):
        if not (rootfs / "boot" / f"initrd.img-{release}").exists():
            _run(["chroot", str(rootfs), "update-initramfs", "-c", "-k", release])
    if not (rootfs / "vmlinuz").exists() or not (rootfs / "initrd.img").exists():
        raise RuntimeError("the kernel package left no /vmlinuz and /initrd.img links in the image")
    _write(rootfs / "etc/fstab", f"LABEL={FS_LABEL} / ext4 defaults 0 1\n")
    _write(rootfs / "etc/hostname", "debian\n")
    _write(rootfs / "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    resolv = rootfs / "etc/resolv.conf"  # debootstrap copied the build machine's
    resolv.unlink(missing_ok=True)
    _write(resolv, "")
    shadow = rootfs / "etc/shadow"
    shadow.write_text("".join(
        line.replace("root:*:", "root:!*:", 1) if line.startswith("root:*:") else line
        for line in shadow.read_text().splitlines(keepends=True)
    ))
    _write(rootfs / "etc/cloud/cloud.cfg.d/90_datasource.cfg", "datasource_list: [ NoCloud, None ]\n")
    # Debian's cloud-init sets en_US.UTF-8, which minbase has not generated: cc_locale would fail the boot.
    _write(rootfs / "etc/default/locale", "LANG=C.UTF-8\n")
    _write(rootfs / "etc/cloud/cloud.cfg.d/91_swarm_estate_image.cfg",
           "locale: C.UTF-8\n# bookworm's OpenSSH has no DSA host keys\nssh_genkeytypes: [rsa, ecdsa, ed25519]\n")
    _write(rootfs / "etc/machine-id", "", 0o444)
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.parent.mkdir(parents=True, exist_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # An offline site's nodes reach no mirror: apt fails at once instead of retrying.
    _write(rootfs / "etc/apt/apt.conf.d/90-swarm-estate-offline",
           'Acquire::Retries "0";\nAcquire::http::Timeout "20";\n')
    _write(rootfs / "etc/systemd/system" / PRELOAD_UNIT, PRELOAD_UNIT_TEXT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants" / PRELOAD_UNIT
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.symlink_to(f"/etc/systemd/system/{PRELOAD_UNIT}")
    grub = rootfs / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    # /vmlinuz and /initrd.img: Debian's links, which the kernel package keeps current on upgrades.
    _write(grub / "grub.cfg", f"""set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
insmod part_msdos
insmod ext2
menuentry 'Debian GNU/Linux' {{
    linux /vmlinuz root=LABEL={FS_LABEL} ro console=tty0 console=ttyS0,115200n8
    initrd /initrd.img
}}
""")


def rootfs_tarball() -> Path:
    """The cached, configured root filesystem (debootstrapped when absent: about two minutes)."""
    return debootstrap_tarball("vm", PACKAGES, _recipe(), _configure)


def _tree_bytes(root: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(root):
        total += 4096
        for name in files:
            total += (os.lstat(os.path.join(directory, name)).st_size + 4095) // 4096 * 4096
    return total


def _embed_grub(disk: Path, core_image: Path) -> None:
    """boot.img into the MBR (keeping its partition table) and core.img into the sectors after it, with the
    fields grub-bios-setup would patch: where core.img starts, and where the rest of it follows."""
    boot = bytearray((GRUB_DIR / "boot.img").read_bytes())
    core = bytearray(core_image.read_bytes())
    sectors = -(-len(core) // SECTOR)
    if 1 + sectors > PART_START_SECTOR:
        raise RuntimeError(f"core.img ({sectors} sectors) does not fit before the partition")
    core += b"\0" * (sectors * SECTOR - len(core))
    entry = SECTOR - BLOCKLIST
    struct.pack_into("<QHH", core, entry, 2, sectors - 1, CORE_LOAD_SEGMENT)
    struct.pack_into("<QHH", core, entry - BLOCKLIST, 0, 0, 0)  # end of the list
    struct.pack_into("<Q", boot, BOOT_KERNEL_SECTOR, 1)
    boot[BOOT_DRIVE] = 0xFF
    boot[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    with disk.open("r+b") as f:
        mbr = f.read(SECTOR)
        if f.read(sectors * SECTOR).strip(b"\0"):
            raise RuntimeError("the sectors after the MBR are not empty")
        boot[BOOT_BPB] = mbr[BOOT_BPB]
        boot[BOOT_PARTITION_TABLE] = mbr[BOOT_PARTITION_TABLE]
        boot[0x1FE:] = b"\x55\xaa"
        f.seek(0)
        f.write(boot)
        f.write(core)


def _check_grub_reads(disk: Path, rootfs: Path) -> None:
    fstest = shutil.which("grub-fstest")
    if fstest is None:
        return
    for path in ("/boot/grub/grub.cfg", "/vmlinuz", "/initrd.img"):
        target = rootfs / path.lstrip("/")
        if target.is_symlink() and os.readlink(target).startswith("/"):
            target = rootfs / os.readlink(target).lstrip("/")
        want = f"{zlib.crc32(target.resolve().read_bytes()):08x}"
        got = subprocess.run([fstest, str(disk), "crc", f"(loop0,msdos1){path}"], capture_output=True, text=True,
                             timeout=TIMEOUT_S, check=False)
        if got.stdout.strip() != want:
            raise RuntimeError(f"GRUB cannot read {path} from the image: {got.stdout}{got.stderr}")


def disk_image(out_dir: Path, preload: Sequence[Path] = ()) -> Path:
    """A bootable qcow2 in `out_dir` from the cached root filesystem, with `preload` (docker save archives)."""
    if missing_tools():
        raise RuntimeError(f"missing {', '.join(missing_tools())}: apt-get install {' '.join(HOST_PACKAGES)}")
    tarball = rootfs_tarball()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vm-image-", dir=cache_dir()) as tmp:
        rootfs, disk = Path(tmp) / "rootfs", Path(tmp) / "disk.raw"
        rootfs.mkdir()
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tarball)])  # owners kept: run as root
        # GRUB's modules come from the same installation as core.img (made below), never from the cache: a
        # core.img and modules of different GRUB builds do not boot.
        modules = rootfs / "boot/grub/i386-pc"
        modules.mkdir(parents=True, exist_ok=True)
        for module in GRUB_DIR.iterdir():
            if module.suffix in (".mod", ".lst", ".img") or module.name == "modinfo.sh":
                shutil.copy2(module, modules / module.name)
        for archive in preload:
            target = rootfs / PRELOAD_DIR.lstrip("/") / archive.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(archive, target)
        fs_bytes = -(-(int(_tree_bytes(rootfs) * 1.2) + (384 << 20)) // (64 << 20)) * (64 << 20)
        with disk.open("wb") as f:
            f.truncate(PART_START_SECTOR * SECTOR + fs_bytes)
        _run(["mke2fs", "-F", "-q", "-t", "ext4", "-L", FS_LABEL, "-E",
              f"offset={PART_START_SECTOR * SECTOR},nodiscard", "-d", str(rootfs), str(disk), f"{fs_bytes // 1024}k"])
        table = (f"label: dos\nunit: sectors\n\n"
                 f"start={PART_START_SECTOR}, size={fs_bytes // SECTOR}, type=83, bootable\n")
        _run(["sfdisk", "--no-reread", "--no-tell-kernel", "--wipe", "never", str(disk)], input=table.encode())
        core = Path(tmp) / "core.img"
        _run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_DIR), "-p", "(hd0,msdos1)/boot/grub", "-o", str(core),
              *CORE_MODULES])
        _embed_grub(disk, core)
        _run(["e2fsck", "-fn", f"{disk}?offset={PART_START_SECTOR * SECTOR}"])
        _check_grub_reads(disk, rootfs)
        image = out_dir / "swarm-estate-bookworm.qcow2"
        _run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(image)])
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.vm_image", description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the image into --out")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--preload", type=Path, nargs="*", default=[], help="docker save archives to carry")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("vm_image: run as root (debootstrap, and the image's files keep their owners)", file=sys.stderr)
        return 1
    try:
        print(disk_image(args.out, args.preload))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"vm_image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
