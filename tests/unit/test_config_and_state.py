"""Configuration checks, state names and fingerprints."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from linreg.config import DataConfig, HyperParams, Settings
from linreg.errors import StateError
from linreg.state import InMemoryStateStore, TrainingState, check_state_name, fingerprint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_rows": 0}, "greater than or equal to 1"),
        ({"test_fraction": 1.0}, "less than 1"),
        ({"test_fraction": -0.1}, "greater than or equal to 0"),
        ({"target": ""}, "at least 1 character"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_data_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        DataConfig(source="x", **kwargs)


def test_optimal_learning_rate_needs_a_penalty():
    with pytest.raises(ValidationError, match="needs alpha > 0"):
        HyperParams(model="sgd", learning_rate="optimal")
    assert HyperParams(model="sgd", learning_rate="optimal", alpha=1e-4).alpha == 1e-4
    with pytest.raises(ValidationError):
        HyperParams(model="lasso")


@pytest.mark.parametrize("name", ["linreg-state", "a", "model-2"])
def test_valid_state_names(name):
    assert check_state_name(name) == name


@pytest.mark.parametrize("name", ["Linreg", "with space", "under_score", "", "-x", "a/b"])
def test_invalid_state_names_are_refused(name):
    with pytest.raises(StateError, match="lowercase letters, digits and dashes"):
        check_state_name(name)


def test_fingerprint_ignores_the_spelling_of_a_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    spellings = ["data", "./data/", str(tmp_path / "data"), f"file://{tmp_path}/data"]
    assert len({fingerprint(s, ["a"], "y", "ols") for s in spellings}) == 1
    assert fingerprint("data", ["a"], "y", "ols") != fingerprint("data", ["a"], "y", "sgd")
    assert fingerprint("data", ["a"], "y", "ols") != fingerprint("data", ["b"], "y", "ols")


def test_state_store_refuses_a_stale_version():
    store = InMemoryStateStore()
    state = TrainingState.fresh("s", ["a"], "y", "ols")
    store.save(state.model_copy(update={"version": 1}), expected_version=None)
    with pytest.raises(StateError, match="expected version 0, found 1"):
        store.save(state.model_copy(update={"version": 1}), expected_version=0)
    store.save(state.model_copy(update={"version": 2}), expected_version=1)
    assert store.load().version == 2


def test_settings_come_from_the_environment():
    settings = Settings.from_env({"LINREG_OUT_DIR": "/m", "LINREG_STATE_BLOCK": "s"})
    assert (settings.out_dir, settings.state_block) == ("/m", "s")
    assert Settings.from_env({}).state_block == "linreg-state"
