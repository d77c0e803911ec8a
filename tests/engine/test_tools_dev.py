"""`bash tools/dev up|preview|down`, the README's first command, run as a user runs it: from a copy of the
project whose `Pulumi.dev.yaml` differs only in where this machine can put it (a socket of the test's own, free
loopback ports, a free subnet), where no Docker engine answers, so the script starts its own, and no registry
answers, so it builds the images the stack names offline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness import free_subnet
from tests.harness.ports import free_ports
from tests.harness.probe import request
from tests.harness.pulumi import ROOT
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

COPIED = ("Pulumi.yaml", "Pulumi.dev.yaml", "__main__.py", "components", "stacks", "tools", "requirements.txt")


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    # short: the engine's exec root holds unix sockets, whose paths are limited to 108 bytes
    top = Path(tempfile.mkdtemp(prefix="se-dev-", dir="/tmp"))
    copy = top / "p"
    copy.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / name)
    (copy / "venv").symlink_to(ROOT / "venv")
    doc = yaml.safe_load((copy / "Pulumi.dev.yaml").read_text())
    estate = doc["config"]["swarm-estate:estate"]
    http, https = free_ports(2, consecutive=2)
    estate["docker"].update(engine_host=f"unix://{top}/e/docker.sock", api_socket_dir=str(top / "api"),
                            l7_http_port=http, l7_https_port=https)
    estate["node_network"]["subnet"] = str(free_subnet())
    (copy / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    try:
        yield copy
    finally:
        pid_file = top / "e" / "dockerd.pid"
        if pid_file.exists():  # only if a test failed before `down` stopped it
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["umount", "-R", "-l", str(top / "e")], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


def dev(project: Path, action: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "DOCKER_"))}
    env["SWARM_ESTATE_DEV_ENGINE"] = str(project.parent / "e")
    result = subprocess.run(["bash", "tools/dev", action], cwd=project, env=env, capture_output=True, text=True,
                            timeout=2400, check=False)
    assert result.returncode == 0, f"tools/dev {action}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_up_starts_an_engine_builds_the_images_brings_the_estate_up_and_says_where_it_answers(project: Path) -> None:
    result = dev(project, "up")
    assert "starting a private one there" in result.stderr
    for image in ("docker:27-dind", "haproxy:3.0", "busybox:1.36"):
        assert re.search(rf"image {re.escape(image)}: (present|pulled|no registry answered; built offline)",
                         result.stderr), image
    commands = re.findall(r"curl -k -H 'Host: (\S+)' (https://127\.0\.0\.1:\d+)/", result.stdout)
    assert commands and {host for host, _ in commands} == {"demo.dev.localhost"}
    for host, entry in commands:
        wait_until(lambda h=host, e=entry: request(e, h, "/").status == 200, 300, f"{host} through {entry}")
        assert "swarm-estate demo" in request(entry, host, "/").body
    assert (project / ".pulumi-local" / ".pulumi").is_dir()  # the project-local backend


def test_preview_after_up_plans_nothing(project: Path) -> None:
    result = dev(project, "preview")
    assert re.search(r"\n\s+43 unchanged|(\d+) unchanged", result.stdout), result.stdout[-2000:]
    assert not re.search(r"\b(to create|to update|to delete|to replace)\b", result.stdout), result.stdout[-2000:]


def test_down_destroys_it_and_stops_the_engine_it_started(project: Path) -> None:
    pid = int((project.parent / "e" / "dockerd.pid").read_text())
    result = dev(project, "down")
    assert "stopping the private engine this script started" in result.stderr
    assert re.search(r"- \d+ deleted", result.stdout), result.stdout[-2000:]
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 60, "the private engine gone")
