"""Static checks of what cannot run here: GitHub workflows, prefect.yaml entrypoints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def test_the_three_workflows_exist():
    assert [path.name for path in WORKFLOWS] == ["ci.yml", "image.yml", "train.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_matches_the_github_workflow_schema(workflow):
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_pins_actions_and_keeps_least_privilege(workflow):
    text = workflow.read_text()
    document = yaml.safe_load(text)
    assert document["permissions"] == {"contents": "read"}
    assert "write-all" not in text
    for action in re.findall(r"uses:\s*(\S+)", text):
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), f"unpinned: {action}"
    for line in text.splitlines():
        if re.search(r"(API_KEY|TOKEN|AUTH_STRING|PASSWORD)\s*:", line) and "${{" in line:
            assert "secrets." in line, f"a credential not read from secrets: {line.strip()}"


def test_ci_runs_the_readme_test_command():
    steps = yaml.safe_load((PROJECT / ".github/workflows/ci.yml").read_text())["jobs"]["test"]
    assert {"name": "Test", "run": "make test"} in steps["steps"]
    assert "make test" in (PROJECT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "deployment",
    yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"],
    ids=lambda deployment: deployment["name"],
)
def test_every_prefect_yaml_entrypoint_imports(deployment):
    flow = load_flow_from_entrypoint(str(PROJECT / deployment["entrypoint"]))
    assert flow.name in {"train-step", "train-all", "rollback", "promote", "skip-batch", "score"}
    assert flow.description


def test_the_cron_deployment_catches_up_within_its_default_interval():
    """train-step/scheduled drains a backlog in one round, and its time budget leaves the
    run room to finish (publish, save) before the Makefile's default cron fires again."""
    from prefect._vendor.croniter import croniter

    deployments = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    (step,) = [d for d in deployments if d["entrypoint"].endswith(":train_step")]
    parameters = step["parameters"]
    flow = load_flow_from_entrypoint(str(PROJECT / step["entrypoint"]))
    schema = flow.parameters.model_dump()["properties"]
    assert {"max_batches", "max_seconds"} <= set(schema)
    assert parameters["max_batches"] > 1
    cron = re.search(r"^LINREG_STEP_CRON \?= (.+)$", (PROJECT / "Makefile").read_text(), re.M)
    slots = croniter(cron.group(1).strip(), 0)
    first, second = slots.get_next(float), slots.get_next(float)
    interval = second - first
    assert 0 < parameters["max_seconds"] <= interval / 2, (parameters["max_seconds"], interval)
