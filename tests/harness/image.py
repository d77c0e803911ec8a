"""Images the harness needs, built offline (Debian packages only, nothing from Docker Hub).

The node image is a debootstrapped Debian with Docker, sshd and tini; its root filesystem tarball
is cached under `cache_dir()` keyed by a hash of the recipe, so only the first run pays for the
debootstrap (about a minute). The busybox image is `FROM scratch` + Debian's static busybox.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .engine import Engine

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRROR = os.environ.get("SWARM_ESTATE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("docker.io", "openssh-server", "iproute2", "iptables", "procps", "tini")
ENTRYPOINT = HERE / "node-entrypoint.sh"
# Bump when the build steps below change in a way the inputs do not show.
RECIPE_VERSION = "1"
BUILD_TIMEOUT_S = 900


def cache_dir() -> Path:
    root = os.environ.get("SWARM_ESTATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "swarm-estate"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_hash() -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, "minbase", ",".join(PACKAGES)):
        digest.update(part.encode() + b"\0")
    digest.update(ENTRYPOINT.read_bytes())
    return digest.hexdigest()[:16]


def node_rootfs_tarball() -> Path:
    """The cached root filesystem of the node image; debootstraps it when absent."""
    tarball = cache_dir() / f"node-{SUITE}-{recipe_hash()}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap): the node image needs it")
    with tempfile.TemporaryDirectory(prefix="node-rootfs-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if result.returncode != 0:
            log = (rootfs / "debootstrap" / "debootstrap.log")
            detail = log.read_text()[-3000:] if log.exists() else result.stderr[-3000:]
            raise RuntimeError(f"debootstrap of the node image failed ({result.returncode}):\n{detail}")
        shutil.copy(ENTRYPOINT, rootfs / "usr/local/bin/node-entrypoint")
        os.chmod(rootfs / "usr/local/bin/node-entrypoint", 0o755)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       timeout=BUILD_TIMEOUT_S)
        partial.rename(tarball)  # atomic: a concurrent or interrupted build never leaves half a cache entry
    for stale in cache_dir().glob(f"node-{SUITE}-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)  # an older recipe: ~400 MB nobody will use again
    return tarball


def node_image(engine: Engine) -> str:
    """Import the node image into `engine` (once per engine) and return its reference."""
    ref = f"swarm-estate-node:{recipe_hash()}"
    if engine.run("image", "inspect", ref, check=False).returncode == 0:
        return ref
    tarball = node_rootfs_tarball()
    engine.run(
        "import",
        "--change", 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/node-entrypoint"]',
        str(tarball), ref,
        timeout=600,
    )
    return ref


def busybox_image(engine: Engine, ref: str = "swarm-estate-busybox:1") -> str:
    """A tiny image with /bin/busybox as its only file (plus applet links), built without a registry."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        raise RuntimeError("busybox-static is not installed (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory(prefix="busybox-image-") as tmp:
        shutil.copy(busybox, Path(tmp) / "busybox")
        Path(tmp, "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            'CMD ["/bin/sh"]\n'
        )
        engine.run("build", "-q", "-t", ref, tmp, timeout=300, env={"DOCKER_BUILDKIT": "0"})
    return ref
