"""The automation that marks a flow run Crashed when its heartbeats stop
(``deployments/crash-detection.yaml``), created on a server that lacks it."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore

CRASH_DETECTION_FILE = Path(__file__).resolve().parents[1] / "deployments" / "crash-detection.yaml"


def crash_detection(within_seconds: float | None = None) -> AutomationCore:
    """The automation as the file gives it; ``within_seconds`` replaces its wait (tests)."""
    spec = yaml.safe_load(CRASH_DETECTION_FILE.read_text())
    if within_seconds is not None:
        spec["trigger"]["within"] = within_seconds
    return AutomationCore.model_validate(spec)


def ensure_crash_detection(within_seconds: float | None = None) -> tuple[str, bool]:
    """Create the automation on the current Prefect server unless one of its name exists
    there: its name, and whether it was created now."""
    automation = crash_detection(within_seconds)
    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(automation.name):
            return automation.name, False
        client.create_automation(automation)
    return automation.name, True


if __name__ == "__main__":  # make deploy
    name, created = ensure_crash_detection()
    print(f"automation '{name}': {'created' if created else 'already there'}")
