"""Schema checks: one readable schema across files, target and features present and numeric."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

from linreg.config import DataConfig
from linreg.errors import DataError
from linreg.sources import CsvFormat, DataFile, StorageOptions, discover_files, inspect_file


@dataclass(frozen=True)
class SourcePlan:
    """A validated source: its files and the columns training reads from them."""

    source: str
    files: tuple[DataFile, ...]
    features: tuple[str, ...]
    target: str
    # Also used to publish to an object store; not shown: it may hold credentials.
    storage_options: StorageOptions = field(default_factory=dict, compare=False, repr=False)
    excluded_columns: dict[str, str] = field(default_factory=dict, compare=False)
    weight: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns in the order every batch array holds them: features, then the target."""
        return (*self.features, self.target)

    @property
    def n_rows(self) -> int:
        return sum(data_file.n_rows for data_file in self.files)


Mapper = Callable[[Callable[[str, str], DataFile], Iterable[str], Iterable[str]], list[DataFile]]


def _serial_map(function, *iterables) -> list:
    return list(map(function, *iterables))


def validate_source(config: DataConfig, mapper: Mapper = _serial_map) -> SourcePlan:
    """Inspect every file of ``config.source`` and check the schema the run relies on.

    ``mapper(inspect_file, file_ids, urls)`` may inspect the files in parallel (on Dask).
    Raises :class:`DataError` naming the file and column of the first problem found.
    """
    options = config.storage_options
    found = discover_files(config.source, options)
    csv = CsvFormat(
        delimiter=config.csv_delimiter,
        decimal=config.csv_decimal,
        thousands=config.csv_thousands,
        na_values=tuple(config.na_values),
    )
    inspect = partial(inspect_file, storage_options=options, csv=csv)
    files = mapper(inspect, [file_id for file_id, _ in found], [url for _, url in found])
    check_same_columns(files)
    reference = files[0]
    if config.target not in reference.columns:
        raise DataError(
            f"{reference.file_id}: target column '{config.target}' not found "
            f"(columns: {', '.join(reference.columns)})"
        )
    roles = {config.target: "target"}
    if config.weight is not None:
        if config.weight == config.target:
            raise DataError(f"--weight: the target column '{config.target}' cannot be the weight")
        if config.weight not in reference.columns:
            raise DataError(
                f"{reference.file_id}: weight column '{config.weight}' not found "
                f"(columns: {', '.join(reference.columns)})"
            )
        if config.features and config.weight in config.features:
            raise DataError(f"--weight: column '{config.weight}' cannot also be a feature")
        roles[config.weight] = "weight"
    features = _choose_features(reference, config.features, config.target, config.weight)
    for data_file in files:
        for name in (*features, *roles):
            if name not in data_file.numeric_columns:
                role = roles.get(name, "feature")
                why = data_file.excluded.get(name)
                raise DataError(
                    f"{data_file.file_id}: {role} column '{name}' is not numeric"
                    + (f": {why}" if why else "")
                )
    excluded = {}
    if config.features is None:
        excluded = {
            name: reason for name, reason in reference.excluded.items() if name != config.target
        }
    plan = SourcePlan(
        config.source,
        tuple(files),
        tuple(features),
        config.target,
        options,
        excluded,
        config.weight,
    )
    if plan.n_rows == 0:
        raise DataError(f"{config.source}: no data rows (every file is empty or header only)")
    return plan


def check_same_columns(files: Sequence[DataFile]) -> None:
    reference = files[0]
    for data_file in files[1:]:
        missing = [name for name in reference.columns if name not in data_file.columns]
        extra = [name for name in data_file.columns if name not in reference.columns]
        if missing or extra:
            raise DataError(
                f"{data_file.file_id}: columns differ from {reference.file_id} "
                f"(missing {missing}, extra {extra}); all files must share one schema"
            )


def _choose_features(
    reference: DataFile, requested: Sequence[str] | None, target: str, weight: str | None = None
) -> list[str]:
    if requested is None:
        features = [
            name
            for name in reference.columns
            if name in reference.numeric_columns and name not in (target, weight)
        ]
        if not features:
            why = "; ".join(
                f"'{name}' is {reason}"
                for name, reason in reference.excluded.items()
                if name != target
            )
            raise DataError(
                f"{reference.file_id}: no numeric feature columns besides target '{target}'"
                + (f" ({why}; --na-values marks placeholder tokens as missing)" if why else "")
            )
        return features
    if not requested:
        raise DataError("--features: the feature list is empty")
    duplicates = sorted({name for name in requested if list(requested).count(name) > 1})
    if duplicates:
        raise DataError(f"--features: duplicate feature names {duplicates}")
    if target in requested:
        raise DataError(f"--features: the target column '{target}' cannot also be a feature")
    for name in requested:
        if name not in reference.columns:
            raise DataError(
                f"{reference.file_id}: feature column '{name}' not found "
                f"(columns: {', '.join(reference.columns)})"
            )
    return list(requested)
