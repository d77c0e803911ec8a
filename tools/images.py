"""Images built offline, from this machine's Debian packages: nothing comes from a registry.

- `node_image`: a debootstrapped Debian with Docker, sshd and tini, for docker-in-docker swarm nodes (the docker
  substrate's nodes, and the tests' SSH-reachable nodes). Its root filesystem tarball is cached under
  `cache_dir()` keyed by a hash of the recipe, so only the first build pays for the debootstrap (about a minute).
- `haproxy_image`: `FROM scratch` with Debian's `haproxy`, the shared libraries `ldd` names (plus libgcc_s, which
  glibc loads at run time) and a static busybox for the L7 healthcheck's `sh`/`wget`. Its command is what the
  official image runs: `haproxy -W -db -f <CONFIG_PATH>`.
- `busybox_image`: `FROM scratch` + Debian's static busybox.
- `app_image`: busybox `httpd`, the tests' demo app: its entrypoint writes the task's hostname to `/www/hostname`
  (and an index/health page when the stack mounts none), then runs the stack's command, so a test can tell which
  replica answered.

`tools/dev` uses them where no registry answers, tagged as the images the dev stack names; the tests use them on
their isolated engines. Every function takes something that runs the docker CLI against one engine (`DockerCli`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from components.render.l7 import CONFIG_PATH


class DockerCli(Protocol):
    def run(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]: ...


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


def debootstrap_tarball(
    kind: str, packages: tuple[str, ...], recipe: str, customize: Callable[[Path], None]
) -> Path:
    """The cached root filesystem `<kind>-<suite>-<recipe>.tar`: a minbase Debian with `packages`, then
    `customize(rootfs)`; debootstrapped when absent. Older recipes of the same kind are deleted (~400 MB each)."""
    tarball = cache_dir() / f"{kind}-{SUITE}-{recipe}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise RuntimeError(f"debootstrap is not installed (apt-get install debootstrap): the {kind} image needs it")
    with tempfile.TemporaryDirectory(prefix=f"{kind}-rootfs-", dir=cache_dir()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), MIRROR]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if result.returncode != 0:
            log = rootfs / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-3000:] if log.exists() else result.stderr[-3000:]
            raise RuntimeError(f"debootstrap of the {kind} image failed ({result.returncode}):\n{detail}")
        customize(rootfs)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       timeout=BUILD_TIMEOUT_S)  # fmt: skip
        partial.rename(tarball)  # atomic: a concurrent or interrupted build never leaves half a cache entry
    for stale in cache_dir().glob(f"{kind}-{SUITE}-*.tar"):
        if stale != tarball:
            stale.unlink(missing_ok=True)  # an older recipe nobody will use again
    return tarball


def _add_entrypoint(rootfs: Path) -> None:
    shutil.copy(ENTRYPOINT, rootfs / "usr/local/bin/node-entrypoint")
    os.chmod(rootfs / "usr/local/bin/node-entrypoint", 0o755)


def node_rootfs_tarball() -> Path:
    """The cached root filesystem of the node image; debootstraps it when absent."""
    return debootstrap_tarball("node", PACKAGES, recipe_hash(), _add_entrypoint)


def node_image(engine: DockerCli) -> str:
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


def busybox_image(engine: DockerCli, ref: str = "swarm-estate-busybox:1") -> str:
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


PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APP_ENTRYPOINT = """#!/bin/sh
# The demo app: busybox httpd serving /www; /www/hostname names the replica that answered.
mkdir -p /www
hostname > /www/hostname
[ -e /www/index.html ] || hostname > /www/index.html
[ -e /www/health ] || echo ok > /www/health
[ $# -gt 0 ] || set -- httpd -f -v -p 8080 -h /www
exec "$@"
"""


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed (apt-get install it): the offline images need it")
    return found


def _shared_libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True, timeout=30).stdout
    libs = re.findall(r"(/\S+\.so[.\d]*)", out)
    # glibc dlopens libgcc_s for thread cancellation/unwinding; ldd does not list it for every binary.
    for extra in ("/lib/x86_64-linux-gnu/libgcc_s.so.1", "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"):
        if os.path.exists(extra):
            libs.append(extra)
            break
    return sorted(set(libs))


def _put(rootfs: Path, path: str, source: str | None = None, text: str | None = None, mode: int = 0o755) -> None:
    target = rootfs / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copyfile(source, target)  # follows symlinks: the image gets the library itself
    else:
        target.write_text(text or "")
    target.chmod(mode)


def _build(engine: DockerCli, ref: str, rootfs: Path, dockerfile_tail: str) -> str:
    context = rootfs.parent
    (context / "Dockerfile").write_text(f"FROM scratch\nCOPY rootfs/ /\nENV {PATH_ENV.replace('=', ' ', 1)}\n"
                                        + dockerfile_tail)
    engine.run("build", "-q", "-t", ref, str(context), timeout=300, env={"DOCKER_BUILDKIT": "0"})
    return ref


def _busybox(rootfs: Path, applets: tuple[str, ...]) -> None:
    _put(rootfs, "/bin/busybox", source=_tool("busybox"))
    for applet in applets:
        (rootfs / "bin" / applet).symlink_to("busybox")


def _recipe(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def haproxy_image(engine: DockerCli) -> str:
    haproxy = _tool("haproxy")
    libs = _shared_libraries(haproxy)
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    ref = f"swarm-estate-haproxy:{_recipe(version, *libs)}"
    if engine.run("image", "inspect", ref, check=False).returncode == 0:
        return ref
    with tempfile.TemporaryDirectory(prefix="haproxy-image-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _put(rootfs, "/usr/sbin/haproxy", source=haproxy)
        for lib in libs:
            _put(rootfs, lib, source=lib)
        # The healthcheck is `sh -c 'wget …'`; HAProxy needs a writable /tmp and /var/run for nothing else.
        _busybox(rootfs, ("sh", "wget", "cat", "ls"))
        (rootfs / "tmp").mkdir()
        (rootfs / Path(CONFIG_PATH).parent.relative_to("/") / "certs").mkdir(parents=True)
        return _build(engine, ref, rootfs, f'STOPSIGNAL SIGUSR1\nCMD ["haproxy", "-W", "-db", "-f", "{CONFIG_PATH}"]\n')


def app_image(engine: DockerCli) -> str:
    ref = f"swarm-estate-app:{_recipe(APP_ENTRYPOINT)}"
    if engine.run("image", "inspect", ref, check=False).returncode == 0:
        return ref
    with tempfile.TemporaryDirectory(prefix="app-image-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _busybox(rootfs, ("sh", "httpd", "wget", "hostname", "mkdir", "cat"))
        _put(rootfs, "/usr/local/bin/app", text=APP_ENTRYPOINT)
        (rootfs / "tmp").mkdir()
        return _build(engine, ref, rootfs, 'EXPOSE 8080\nENTRYPOINT ["/usr/local/bin/app"]\n')


def image_id(engine: DockerCli, ref: str) -> str:
    return engine.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


# --- `python -m tools.images ensure REF…`: what tools/dev runs -----------------------------------------------

# Which offline build stands in for an image of a given repository, where no registry answers.
OFFLINE = {
    "docker": node_image,  # docker:<version>-dind: a Docker engine in a container
    "haproxy": haproxy_image,
    "busybox": busybox_image,
}
PULL_TIMEOUT_S = 300


class Engine:
    """The docker CLI against one engine (DOCKER_HOST), for the command line below."""

    def __init__(self, host: str):
        self.host = host

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "DOCKER_HOST": self.host, **(env or {})}
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input,
                                env=full, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result


def ensure(engine: DockerCli, ref: str) -> str:
    """Make `ref` present in the engine: already there, pulled, or built offline and tagged `ref` (said so)."""
    if engine.run("image", "inspect", ref, check=False).returncode == 0:
        return f"{ref}: present"
    pulled = engine.run("pull", "-q", ref, check=False, timeout=PULL_TIMEOUT_S)
    if pulled.returncode == 0:
        return f"{ref}: pulled"
    repository = re.sub(r"[:@].*$", "", ref.rsplit("/", 1)[-1])
    build = OFFLINE.get(repository)
    if build is None:
        raise RuntimeError(f"{ref}: not present, the pull failed ({pulled.stderr.strip()[:200]}) and there is no "
                           f"offline build for {repository!r} images (there is for {', '.join(sorted(OFFLINE))})")
    built = build(engine)
    engine.run("tag", built, ref)
    return f"{ref}: no registry answered; built offline from Debian packages ({built}) and tagged {ref}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.images", description="images for the docker substrate")
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = sub.add_parser("ensure", help="make each image present: as it is, pulled, or built offline")
    ensure_cmd.add_argument("refs", nargs="+")
    args = parser.parse_args(argv)
    engine = Engine(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    try:
        for ref in args.refs:
            print(ensure(engine, ref), flush=True)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
