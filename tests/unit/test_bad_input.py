"""Bad input from outside, as a new user writes it: every file and config mistake ends in one clean error that
names the file (line and column) or the config path and the rule, exit code 2, no traceback, nothing written;
and mistakes YAML or a list would otherwise swallow in silence are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.model import EstateConfigError, load_estate
from components.prepare import prepare
from tests.harness.project import ROOT, TEST_SECRETS, estate_of

P = "swarm-estate:estate"


def synth_cli(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.synth", "bad", "--config", str(config), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def refused(tmp_path: Path, text: str) -> str:
    """Synth a stack file; it must be refused cleanly. Returns what the user reads."""
    config, out = tmp_path / "Pulumi.bad.yaml", tmp_path / "out"
    config.write_text(text)
    proc = synth_cli(config, out)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert not out.exists(), "a refused config must write nothing"
    return proc.stderr


def stack_file(estate: dict[str, Any] | None = None, **extra: Any) -> str:
    config: dict[str, Any] = {f"{P}": estate if estate is not None else estate_of("prod"), **extra}
    config.update({k: v for k, v in TEST_SECRETS.items() if k not in config})
    return yaml.safe_dump({"config": config}, sort_keys=False)


# --- 1. tracebacks become clean errors ---------------------------------------------------------------


def test_a_tab_in_a_stack_file_names_file_line_and_column(tmp_path: Path) -> None:
    text = stack_file(estate_of("dev")).replace("\n    name: dev\n", "\n\tname: dev\n", 1)
    assert "\tname: dev" in text
    line = text.splitlines().index("\tname: dev") + 1
    err = refused(tmp_path, text)
    assert f"Pulumi.bad.yaml:{line}:1:" in err and "tab" in err


def test_a_repeated_key_in_a_stack_file_is_refused_naming_both_lines(tmp_path: Path) -> None:
    text = stack_file(estate_of("dev"))
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("domain:"))
    lines.insert(first + 1, lines[first].replace("dev.localhost", "other.localhost"))
    err = refused(tmp_path, "\n".join(lines) + "\n")
    assert f"Pulumi.bad.yaml:{first + 2}:" in err
    assert f"key 'domain' repeats the one on line {first + 1}" in err


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("swarm-estate:estates", "the stack sets swarm-estate:estates: a typo for swarm-estate:estate?"),
        ("swarm-estate:Estate", "the stack sets swarm-estate:Estate: a typo for swarm-estate:estate?"),
        ("other:estate", "the stack sets only swarm-estate:registryHtpasswd"),
    ],
)
def test_a_missing_or_misspelt_estate_key_says_what_is_there(tmp_path: Path, key: str, hint: str) -> None:
    text = stack_file().replace(f"{P}:", f"{key}:", 1)
    err = refused(tmp_path, text)
    assert f"{P} is not set" in err and hint in err


def test_an_empty_estate_is_refused(tmp_path: Path) -> None:
    assert "the estate is empty or not a mapping" in refused(tmp_path, stack_file({}))


def test_every_unset_secret_is_named_with_its_path_and_the_command(tmp_path: Path) -> None:
    config = {f"{P}": estate_of("prod"), "swarm-estate:sshPrivateKey": TEST_SECRETS["swarm-estate:sshPrivateKey"]}
    err = refused(tmp_path, yaml.safe_dump({"config": config}))
    for path, key in (
        ("registry.htpasswd_secret", "registryHtpasswd"),
        ("l7.certificates[0].secret", "tlsWildcardPem"),
        ("l4.vrrp_auth_secret", "vrrpPassword"),
    ):
        assert f"{P}.{path}: names the secret config key {key}, which this stack does not set: run " in err
        assert f"`pulumi config set --secret {key}`" in err
    assert "sshPrivateKey, which" not in err


def test_a_secret_of_a_switched_off_section_is_not_required(tmp_path: Path) -> None:
    estate = estate_of("prod")
    estate["registry"]["enabled"] = False
    secrets = {k: v for k, v in TEST_SECRETS.items() if k != "swarm-estate:registryHtpasswd"}
    config, out = tmp_path / "Pulumi.ok.yaml", tmp_path / "out"
    config.write_text(yaml.safe_dump({"config": {P: estate, **secrets}}))
    proc = synth_cli(config, out)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_backend_too_large_for_a_dns_answer_is_a_rule_not_a_renderer_crash() -> None:
    raw = estate_of("prod")
    raw["stacks"]["conductor"]["services"]["conductor-ui"]["replicas"] = 300
    with pytest.raises(EstateConfigError) as info:
        prepare(raw, ROOT, "prod")
    (problem,) = info.value.problems
    assert problem.startswith(f"{P}.stacks.conductor.services.conductor-ui.replicas: 300 replicas (set here) need a "
                              "DNS answer of")  # fmt: skip
    # conductor_conductor-ui: 12 + 24 + 6 + 11 bytes around 16 per slot; 250 replicas get 500 slots (8053 bytes),
    # 251 would get 510 (8213 > 8192)
    assert "at most 250 replicas per routed service" in problem


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("self-signed", "'self-signed' is the name of the generated certificate"),
        ("x" * 54, "at most 53 characters"),
    ],
)
def test_certificate_names_the_l7_cannot_use_are_rules(name: str, rule: str) -> None:
    raw = estate_of("prod")
    raw["l7"]["self_signed"] = True
    raw["l7"]["certificates"][0]["name"] = name
    with pytest.raises(EstateConfigError) as info:
        load_estate(raw)
    assert any(p.startswith(f"{P}.l7.certificates[0].name: ") and rule in p for p in info.value.problems)


def test_an_internal_error_says_it_is_a_bug(tmp_path: Path) -> None:
    """Nothing a user writes should reach this; a program that breaks anyway says so instead of dumping a trace."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "components", "stacks"):
        (project / name).symlink_to(ROOT / name)
    main = (ROOT / "__main__.py").read_text()
    broken = main.replace("    estate = Estate(", "    raise KeyError('boom')\n    estate = Estate(")
    assert broken != main
    (project / "__main__.py").write_text(broken)
    probe = (
        "import sys; from tools.synth import run_program, stack_config; from pathlib import Path\n"
        "import pulumi\n"
        "try:\n"
        f"    run_program(stack_config(Path({str(ROOT / 'Pulumi.dev.yaml')!r})), project_dir=Path({str(project)!r}))\n"
        "except pulumi.RunError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "swarm-estate internal error, a bug (please report it with this text): KeyError: 'boom'" in proc.stdout


# --- 2. mistakes that were accepted in silence ---------------------------------------------------------


def test_a_repeated_key_in_a_compose_file_is_refused_naming_both_lines(tmp_path: Path) -> None:
    compose = tmp_path / "stacks" / "app" / "docker-compose.yml"
    compose.parent.mkdir(parents=True)
    compose.write_text("services:\n  web:\n    image: nginx\n    image: httpd\n")
    raw = estate_of("dev")
    raw["stacks"] = {"app": {"compose": "stacks/app/docker-compose.yml"}}
    with pytest.raises(EstateConfigError) as info:
        prepare(raw, tmp_path, "dev")
    assert info.value.problems == [
        "stacks/app/docker-compose.yml:4:5: key 'image' repeats the one on line 3 (YAML keeps only the last: "
        "remove one)"
    ]


def _rejected(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(EstateConfigError) as info:
        load_estate(raw)
    return info.value.problems


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ("hypervisors", "hypervisors[3].name"),
        ("exports", "nfs.exports[1].name"),
        ("certificates", "l7.certificates[1].name"),
        ("overlays", "overlays[1].name"),
        ("mounts", "nfs.mounts[1].target"),
    ],
)
def test_two_list_entries_with_one_name_are_refused_naming_both(section: str, path: str) -> None:
    raw = estate_of("prod")
    lists = {
        "hypervisors": raw["hypervisors"],
        "exports": raw["nfs"]["exports"],
        "certificates": raw["l7"]["certificates"],
        "overlays": raw.setdefault("overlays", []),
        "mounts": raw["nfs"]["mounts"],
    }
    items = lists[section]
    if section == "overlays":
        items.append({"name": "backend"})
    items.append(dict(items[0]))
    first = path.rsplit("[", 1)[0] + "[0]"
    assert any(
        p.startswith(f"{P}.{path}: ") and f"is also the {path.rsplit('.', 1)[1]} of {P}.{first}" in p
        for p in _rejected(raw)
    ), _rejected(raw)


def test_a_node_name_given_twice_names_both_nodes() -> None:
    raw = estate_of("prod")
    raw["swarm"]["workers"]["nodes"][2]["name"] = raw["swarm"]["workers"]["nodes"][0]["name"]
    name = raw["swarm"]["workers"]["nodes"][0]["name"]
    assert f"{P}.swarm.workers.nodes[2]: node name {name!r} is also the name of {P}.swarm.workers.nodes[0]" in " ".join(
        _rejected(raw)
    )


def test_docker_substrate_host_ports_must_not_overlap() -> None:
    raw = estate_of("dev")
    raw["docker"]["l7_https_port"] = raw["docker"]["l7_http_port"] + 1  # the second L7 node's HTTP port
    problems = _rejected(raw)
    assert any(p.startswith(f"{P}.docker.l7_https_port: the L7 HTTPS ports") and "overlap the L7 HTTP ports" in p
               for p in problems), problems  # fmt: skip
    raw = estate_of("dev")
    raw["docker"]["l7_http_port"] = raw["docker"]["l7_https_port"]
    assert any(p.startswith(f"{P}.docker.l7_https_port:") for p in _rejected(raw))


def test_l7_http_and_https_ports_equal_are_refused() -> None:
    raw = estate_of("prod")
    raw["l7"]["https_port"] = 80  # the default http_port
    assert any(p.startswith(f"{P}.l7.https_port: http_port and https_port are both") for p in _rejected(raw))


def test_drained_l7_nodes_do_not_count_towards_l7_replicas() -> None:
    raw = estate_of("prod")
    labelled = [n for n in raw["swarm"]["workers"]["nodes"] if "l7=true" in n.get("labels", [])]
    assert len(labelled) == raw["l7"]["replicas"]
    labelled[0]["availability"] = "drain"
    problems = _rejected(raw)
    assert any(p.startswith(f"{P}.l7.replicas: 3 L7 replicas need 3 active nodes") and
               f"{labelled[0]['name']} (drain) take no tasks" in p for p in problems), problems  # fmt: skip


def test_manager_spread_advice_fits_a_hypervisor_list_that_is_too_short() -> None:
    raw = estate_of("prod")
    assert len(raw["hypervisors"]) == 3
    raw["swarm"]["managers"]["hypervisors"] = [raw["hypervisors"][0]["name"]]
    spec = load_estate(raw)
    (warning,) = [w for w in spec.warnings if w.path == ("swarm", "managers")]
    assert "list more of the 3 hypervisors under swarm.managers.hypervisors (it names 1)" in warning.message
    assert "add a hypervisor" not in warning.message


def test_a_retired_setting_says_what_became_of_it():
    raw = estate_of("dev")
    raw["docker"]["api_port"] = 23750
    with pytest.raises(EstateConfigError) as info:
        load_estate(raw)
    assert info.value.problems == [
        "swarm-estate:estate.docker.api_port: no longer exists: the swarm's API is a unix socket in "
        "docker.api_socket_dir, never a TCP port (any local process could reach one); delete the line"
    ]
