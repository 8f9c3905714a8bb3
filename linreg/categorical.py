"""Categorical inputs: raw columns, their kind and levels, and the features they become.

Treatment coding: the first level in sorted order is the reference and gets no column; each
other level is a 0/1 feature named ``column=level``. A level not among the stored ones (first
seen after the levels were fixed) is encoded as all zeros, like scikit-learn's
``OneHotEncoder(drop="first", handle_unknown="ignore")``, and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

InputKind = Literal["numeric", "categorical"]

MISSING = -1
"""Code of a missing category value: the row is dropped like one with a missing number."""
UNKNOWN = -2
"""Code of a level that is not among the stored levels: all-zero dummies."""


@dataclass(frozen=True)
class InputColumn:
    """One raw column a model reads: a number, or a category with its sorted levels."""

    name: str
    kind: InputKind = "numeric"
    levels: tuple[str, ...] = ()

    def feature_names(self) -> tuple[str, ...]:
        if self.kind == "numeric":
            return (self.name,)
        return tuple(f"{self.name}={level}" for level in self.levels[1:])

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            entry["levels"] = list(self.levels)
        return entry


def design_features(inputs: Sequence[InputColumn]) -> tuple[str, ...]:
    """The design's feature names, in order, of ``inputs``."""
    return tuple(name for column in inputs for name in column.feature_names())


def with_levels(
    inputs: Sequence[InputColumn], levels: Mapping[str, Sequence[str]]
) -> tuple[InputColumn, ...]:
    """``inputs`` with the categorical columns' levels replaced by ``levels`` where given."""
    return tuple(
        InputColumn(column.name, column.kind, tuple(levels[column.name]))
        if column.kind == "categorical" and column.name in levels
        else column
        for column in inputs
    )


def categories(inputs: Sequence[InputColumn]) -> dict[str, list[str]]:
    """The levels of each categorical input, as the training state stores them."""
    return {column.name: list(column.levels) for column in inputs if column.kind == "categorical"}
