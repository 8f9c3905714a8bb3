"""Training state: everything a later run needs to continue where the last one stopped.

Plain JSON data only (no pickle): the data cursor, the estimator's parameters as numbers,
the version, the held-out statistics and the metrics history. A fingerprint of the source,
columns and model kind refuses to continue a model on different data unless reset.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

from linreg.errors import StateError
from linreg.sources import canonical_source


def fingerprint(
    source: str,
    features: list[str],
    target: str,
    model: str,
    weight: str | None = None,
    categorical: list[str] | None = None,
) -> str:
    """A stable digest of what a model is trained on; a change means a different model.

    With categorical columns, ``features`` are the raw input columns (not their dummies), so
    the digest does not depend on the levels, which the state keeps."""
    identity = {
        "source": canonical_source(source),
        "features": features,
        "target": target,
        "model": model,
    }
    if weight is not None:  # unweighted models keep the digest they always had
        identity["weight"] = weight
    if categorical:  # likewise models without categorical columns
        identity["categorical"] = list(categorical)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# The state keeps the newest versions' metrics only: it is read twice and written once per
# step, so a history of every version made each step of a long-trained model slower (an
# hourly schedule reaches 10,000 versions in 14 months; a step then took 2.9 s against
# 0.9 s). history.jsonl beside the model keeps every version's record.
METRICS_HISTORY_KEPT = 100


class TrainingState(BaseModel):
    """The saved state of one incrementally trained model."""

    version: int = Field(0, ge=0, description="Model version; 0 before the first training step.")
    fingerprint: str
    source: str
    features: list[str]
    target: str
    model: str
    cursor: dict[str, int] = Field(default_factory=dict, description="Rows done per file.")
    estimator: dict[str, Any] | None = Field(None, description="Estimator parameters.")
    holdout: dict[str, Any] | None = Field(None, description="Held-out QR statistics.")
    rows_trained: int = 0
    rows_held_out: int = 0
    rows_dropped: int = 0
    batches_trained: int = 0
    metrics_history: list[dict[str, Any]] = Field(
        default_factory=list,
        description=f"Held-out metrics of the newest {METRICS_HISTORY_KEPT} versions, oldest "
        "first.",
    )
    skipped: list[dict[str, Any]] = Field(
        default_factory=list, description="Batches passed over untrained (--mode skip)."
    )
    recent_holdouts: list[dict[str, Any]] = Field(
        default_factory=list, description="Held-out statistics of the newest batches (window)."
    )
    drift: dict[str, Any] | None = Field(None, description="Page-Hinkley test of drift.")
    updated_at: str | None = None
    categories: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Sorted levels of each categorical column, fixed at the first step.",
    )

    @classmethod
    def fresh(
        cls,
        source: str,
        features: list[str],
        target: str,
        model: str,
        version: int = 0,
        weight: str | None = None,
        categories: dict[str, list[str]] | None = None,
        inputs: list[str] | None = None,
        categorical: list[str] | None = None,
    ) -> TrainingState:
        """``features`` are the design's; ``inputs`` the raw columns when some are
        ``categorical`` (``categories``: their levels, if already fixed)."""
        categories = dict(categories or {})
        return cls(
            version=version,
            fingerprint=fingerprint(
                source, inputs or features, target, model, weight, categorical or list(categories)
            ),
            source=source,
            features=features,
            target=target,
            model=model,
            categories=categories,
        )

    def check_compatible(self, other_fingerprint: str, block_name: str) -> None:
        if self.fingerprint != other_fingerprint:
            raise StateError(
                f"state '{block_name}' holds a {self.model} model of '{self.target}' on "
                f"{self.features} from {self.source}; this run uses a different source, "
                "columns or model. Pass --reset to start a new model, or use another "
                "--state-block"
            )

    def stamped(self) -> TrainingState:
        return self.model_copy(update={"updated_at": datetime.now(UTC).isoformat()})


class StateStore(Protocol):
    """Where training state lives between runs (a Prefect block in production)."""

    name: str

    def load(self) -> TrainingState | None: ...

    def save(self, state: TrainingState, expected_version: int | None) -> None:
        """Save ``state`` if the stored version is still ``expected_version`` (None: absent)."""
        ...


class InMemoryStateStore:
    """A state store for tests and bare runs."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._state: TrainingState | None = None

    def load(self) -> TrainingState | None:
        return None if self._state is None else self._state.model_copy(deep=True)

    def save(self, state: TrainingState, expected_version: int | None) -> None:
        stored = None if self._state is None else self._state.version
        check_expected_version(self.name, stored, expected_version)
        self._state = state.model_copy(deep=True)


STATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"


def check_state_name(name: str) -> str:
    """Prefect block names allow lowercase letters, digits and dashes only."""
    if not re.fullmatch(STATE_NAME_PATTERN, name):
        raise StateError(
            f"state block name '{name}' is invalid: use lowercase letters, digits and dashes"
        )
    return name


def check_expected_version(name: str, stored: int | None, expected: int | None) -> None:
    if stored != expected:
        raise StateError(
            f"state '{name}' changed while this run trained (expected version {expected}, "
            f"found {stored}); not overwriting it"
        )
