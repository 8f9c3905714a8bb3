"""Schema checks: one readable schema across files, target and features present and numeric."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from linreg.categorical import InputColumn, design_features, with_levels
from linreg.config import DataConfig
from linreg.errors import DataError
from linreg.inspection_cache import InspectionCache, as_found, inspection_key
from linreg.sources import (
    CsvFormat,
    DataFile,
    FoundFile,
    StorageOptions,
    column_levels,
    discover_stamped_files,
    inspect_file,
)


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
    # The raw columns behind ``features`` when some are categorical; empty: all numeric.
    inputs: tuple[InputColumn, ...] = ()

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.inputs if column.kind == "categorical")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The raw columns the features come from (the features themselves if all numeric)."""
        return tuple(column.name for column in self.inputs) if self.inputs else self.features

    def with_levels(self, levels: dict[str, list[str]]) -> SourcePlan:
        """This plan with the categorical levels a saved model was trained with."""
        if not self.inputs or not levels:
            return self
        inputs = with_levels(self.inputs, levels)
        return replace(self, inputs=inputs, features=design_features(inputs))

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


def csv_format(config: DataConfig) -> CsvFormat:
    return CsvFormat(
        delimiter=config.csv_delimiter,
        decimal=config.csv_decimal,
        thousands=config.csv_thousands,
        na_values=tuple(config.na_values),
        encoding=config.csv_encoding,
    )


def validate_source(
    config: DataConfig, mapper: Mapper = _serial_map, cache: InspectionCache | None = None
) -> SourcePlan:
    """Inspect every file of ``config.source`` and check the schema the run relies on.

    ``mapper(inspect_file, file_ids, urls)`` may inspect the files in parallel (on Dask);
    with a ``cache``, files unchanged since it kept their inspection are not read again.
    Raises :class:`DataError` naming the file and column of the first problem found.
    """
    options = config.storage_options
    found = discover_stamped_files(config.source, options)
    csv = csv_format(config)
    files = _inspect(found, csv, options, mapper, cache)
    check_same_columns(files)
    reference = files[0]
    if config.target not in reference.columns:
        raise _not_found(reference, "target", config.target)
    roles = {config.target: "target"}
    if config.weight is not None:
        if config.weight == config.target:
            raise DataError(f"--weight: the target column '{config.target}' cannot be the weight")
        if config.weight not in reference.columns:
            raise _not_found(reference, "weight", config.weight)
        if config.features and config.weight in config.features:
            raise DataError(f"--weight: column '{config.weight}' cannot also be a feature")
        roles[config.weight] = "weight"
    categorical = _check_categorical(reference, config, roles)
    features = _choose_features(
        reference, config.features, config.target, config.weight, categorical
    )
    for data_file in files:
        for name in (*features, *roles):
            if name in categorical:
                continue
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
            name: reason
            for name, reason in reference.excluded.items()
            if name != config.target and name not in categorical
        }
    inputs: tuple[InputColumn, ...] = ()
    if categorical:
        inputs = tuple(
            InputColumn(name, "categorical", _levels(files, name))
            if name in categorical
            else InputColumn(name)
            for name in features
        )
        features = list(design_features(inputs))
    plan = SourcePlan(
        config.source,
        tuple(files),
        tuple(features),
        config.target,
        options,
        excluded,
        config.weight,
        inputs,
    )
    if plan.n_rows == 0:
        raise DataError(f"{config.source}: no data rows (every file is empty or header only)")
    return plan


def _inspect(
    found: Sequence[FoundFile],
    csv: CsvFormat,
    options: StorageOptions,
    mapper: Mapper,
    cache: InspectionCache | None,
) -> list[DataFile]:
    """Every file's inspection, in listing order: kept ones from the cache, the rest read."""
    keys = [inspection_key(item, csv) for item in found]
    kept = cache.load(options) if cache else {}
    files: list[DataFile | None] = [
        as_found(kept[key], item) if key in kept else None
        for key, item in zip(keys, found, strict=True)
    ]
    missing = [index for index, data_file in enumerate(files) if data_file is None]
    if missing:
        inspect = partial(inspect_file, storage_options=options, csv=csv)
        ids, urls = [found[i].file_id for i in missing], [found[i].url for i in missing]
        for index, data_file in zip(missing, mapper(inspect, ids, urls), strict=True):
            files[index] = data_file
    if cache:
        cache.reused = len(found) - len(missing)
        current = {key: data_file for key, data_file in zip(keys, files, strict=True) if key}
        if current.keys() != kept.keys():  # all unchanged: nothing to write
            cache.save(current)
    return files


def _not_found(reference: DataFile, role: str, name: str) -> DataError:
    """A named column missing: the columns as written (quoted: a space is part of a name,
    as spreadsheets often leave one), and the one most likely meant."""
    columns = reference.columns
    same = [column for column in columns if column.strip().casefold() == name.strip().casefold()]
    near = same or difflib.get_close_matches(name, columns, n=1)
    return DataError(
        f"{reference.file_id}: {role} column {name!r} not found (columns: "
        f"{', '.join(map(repr, columns))})" + (f"; did you mean {near[0]!r}?" if near else "")
    )


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


def _check_categorical(reference: DataFile, config: DataConfig, roles: dict) -> list[str]:
    names = list(config.categorical)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"--categorical: duplicate column names {duplicates}")
    for name in names:
        if name in roles:
            raise DataError(
                f"--categorical: the {roles[name]} column '{name}' cannot be categorical"
            )
        if name not in reference.columns:
            raise _not_found(reference, "categorical", name)
    return names


def _levels(files: Sequence[DataFile], name: str) -> tuple[str, ...]:
    """The sorted levels of categorical column ``name`` across ``files`` (a column scan)."""
    levels: set[str] = set()
    for data_file in files:
        levels |= column_levels(data_file, name)
    if not levels:
        raise DataError(f"categorical column '{name}' has no values (every row is missing)")
    return tuple(sorted(levels))


def _choose_features(
    reference: DataFile,
    requested: Sequence[str] | None,
    target: str,
    weight: str | None = None,
    categorical: Sequence[str] = (),
) -> list[str]:
    """Raw input columns: the requested ones (categorical columns they do not name are
    appended), or every numeric or categorical column but the target and weight."""
    if requested is not None and requested:
        requested = [*requested, *(name for name in categorical if name not in requested)]
    if requested is None:
        features = [
            name
            for name in reference.columns
            if (
                (name in reference.numeric_columns and name not in reference.excluded)
                or name in categorical
            )
            and name not in (target, weight)
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
            raise _not_found(reference, "feature", name)
    return list(requested)
