"""The service images the replayed estate runs, built offline from this machine's Debian packages.

- `haproxy_image`: `FROM scratch` with Debian's `haproxy` binary, the shared libraries `ldd` names
  (plus libgcc_s, which glibc loads at run time) and a static busybox for the L7 healthcheck's
  `sh`/`wget`. Its command is what the official image runs: `haproxy -W -db -f <CONFIG_PATH>`.
- `app_image`: busybox-static `httpd`, the demo stack's app. Its entrypoint writes the task's
  hostname to `/www/hostname` (and an index/health page when the stack mounts none), then runs
  the stack's command, so a test can tell which replica answered.

Both are tagged in the given engine; `image_id` gives the ID services should be given (a tag
makes every swarm task try a registry pull first, which cannot succeed offline).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from components.l7config import CONFIG_PATH
from tests.harness import Engine

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
        raise RuntimeError(f"{name} is not installed (see .ci/run): the replay images need it")
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


def _build(engine: Engine, ref: str, rootfs: Path, dockerfile_tail: str) -> str:
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


def haproxy_image(engine: Engine) -> str:
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


def app_image(engine: Engine) -> str:
    ref = f"swarm-estate-app:{_recipe(APP_ENTRYPOINT)}"
    if engine.run("image", "inspect", ref, check=False).returncode == 0:
        return ref
    with tempfile.TemporaryDirectory(prefix="app-image-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _busybox(rootfs, ("sh", "httpd", "wget", "hostname", "mkdir", "cat"))
        _put(rootfs, "/usr/local/bin/app", text=APP_ENTRYPOINT)
        (rootfs / "tmp").mkdir()
        return _build(engine, ref, rootfs, 'EXPOSE 8080\nENTRYPOINT ["/usr/local/bin/app"]\n')


def image_id(engine: Engine, ref: str) -> str:
    return engine.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
