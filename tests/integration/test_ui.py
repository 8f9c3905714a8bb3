"""From the Prefect UI in a real browser: start train-step from its deployment page
(Run -> Quick run), watch the run complete, and find its artifacts.

Headless Chromium from Debian (/usr/bin/chromium), driven by Playwright through its
executable_path: no browser download. Screenshots go to the test's temp dir, and also to
$LINREG_UI_SCREENSHOTS (e.g. docs/img) when set.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.integration.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own background traffic (updates, sync, QUIC probes) would try the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _shot(page: Page, directory: Path, name: str) -> None:
    page.screenshot(path=str(directory / name))
    keep = os.environ.get("LINREG_UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(directory / name, Path(keep) / name)


def _run_ids(stack) -> set[str]:
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        deployment = client.read_deployment_by_name("train-step/scheduled")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    return {str(run.id) for run in runs if not run.auto_scheduled}


def _run_state(stack, run_id: str):
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_run(uuid.UUID(run_id)).state


def test_quick_run_from_the_ui_completes_and_lists_artifacts(prefect_stack, tmp_path):
    ui = prefect_stack.api_url.removesuffix("/api")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ui}/deployments", wait_until="networkidle")
            page.get_by_role("link", name="scheduled", exact=True).click()
            page.wait_for_url("**/deployments/deployment/**")
            page.get_by_text("Concurrency Limit").wait_for()
            page.wait_for_load_state("networkidle")
            _shot(page, tmp_path, "ui-deployment.png")

            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Quick run", exact=True).click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Where the data is and how it is cut into batches.").wait_for()
            _shot(page, tmp_path, "ui-run-form.png")
            before = _run_ids(prefect_stack)
            dialog.get_by_role("button", name="Run", exact=True).click()
            # Wait for what lasts, the run on the server, not the toast that announces it
            # (it fades, and on a busy machine it can be gone before it is looked for).
            (new_run,) = wait_until(
                lambda: _run_ids(prefect_stack) - before, 90, "the run started from the UI"
            )
            # The run's end, from the API (it lasts), then the page must show it.
            final = wait_until(
                lambda: (s := _run_state(prefect_stack, new_run)) and s.is_final() and s,
                300,
                "the run started from the UI to finish",
                interval=2,
            )
            assert final.is_completed(), final
            page.goto(f"{ui}/runs/flow-run/{new_run}", wait_until="networkidle")
            page.get_by_text("Completed", exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1_500)  # let the run graph draw
            _shot(page, tmp_path, "ui-flow-run.png")

            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("it-default-metrics").first.wait_for(timeout=60_000)
            page.get_by_text("it-default-model").first.wait_for(timeout=60_000)
            _shot(page, tmp_path, "ui-artifacts.png")
        finally:
            browser.close()
    assert (prefect_stack.out_dir / "model.json").exists()
