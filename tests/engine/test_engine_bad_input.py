"""Bad input under the real engine: `pulumi preview` and `pulumi up` stop with the rule and its path, print no
Python traceback, and leave no resource behind (only the stack itself, which the engine registers before the
program runs). No Docker engine is needed: nothing gets that far."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.project import ROOT, TEST_SECRETS, estate_of
from tests.harness.pulumi import PulumiStack

pytestmark = pytest.mark.slow

P = "swarm-estate:estate"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[PulumiStack]:
    made = PulumiStack.create(tmp_path, "bad", {P: estate_of("dev")})
    yield made
    made.remove()


def refused(stack: PulumiStack, config: dict[str, Any], secrets: dict[str, str] | None = None) -> str:
    """`preview` and then `up` of this config both fail cleanly; returns what `up` printed."""
    stack.set_config(config, secrets=secrets)
    for command in (("preview", "--diff"), ("up", "--yes", "--skip-preview")):
        result = stack.run(*command, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    types = {r["type"] for r in stack.resources()}
    assert types <= {"pulumi:pulumi:Stack"}, f"a refused config left resources behind: {types}"
    return output


def test_a_misspelt_estate_key(stack: PulumiStack) -> None:
    output = refused(stack, {"swarm-estate:estates": estate_of("dev")})
    assert f"{P} is not set (the stack sets swarm-estate:estates: a typo for {P}?)" in output


def test_unset_secrets_are_named_before_anything_is_made(stack: PulumiStack) -> None:
    secrets = {k: v for k, v in TEST_SECRETS.items() if k != "swarm-estate:vrrpPassword"}
    output = refused(stack, {P: estate_of("prod")}, secrets)
    assert (
        f"{P}.l4.vrrp_auth_secret: names the secret config key vrrpPassword, which this stack does not set: "
        "run `pulumi config set --secret vrrpPassword`"
    ) in output


def test_a_repeated_key_in_a_compose_file(stack: PulumiStack) -> None:
    # the test's project gets a stacks/ folder of its own: the repository's stacks plus a broken one
    stacks = stack.project / "stacks"
    stacks.unlink()
    stacks.mkdir()
    for entry in (ROOT / "stacks").iterdir():
        (stacks / entry.name).symlink_to(entry)
    (stacks / "broken").mkdir()
    (stacks / "broken" / "docker-compose.yml").write_text("services:\n  web:\n    image: a\n    image: b\n")
    estate = estate_of("dev")
    estate["stacks"]["broken"] = {"compose": "stacks/broken/docker-compose.yml"}
    output = refused(stack, {P: estate})
    assert "stacks/broken/docker-compose.yml:4:5: key 'image' repeats the one on line 3" in output


def test_a_repeated_key_in_the_stack_file_is_refused_by_the_cli(stack: PulumiStack) -> None:
    text = stack.config_file.read_text()
    stack.config_file.write_text(text.replace("config:\n", "config:\n  swarm-estate:x: 1\n  swarm-estate:x: 2\n", 1))
    result = stack.run("preview", check=False)
    assert result.returncode != 0
    assert 'mapping key "swarm-estate:x" already defined at line' in result.stderr
