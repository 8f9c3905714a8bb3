"""What validation learnt about each data file, kept between runs for the files that have not
changed since.

Validation reads every file of the source on every run: a Parquet file's footer, and the
whole of a CSV file to count its rows. A scheduled step on a growing CSV data set would read
all of it each time to train on one new batch (1.2 GB of CSV took 1.6 s from the page cache,
an object store far longer). An entry is keyed by the file's URL, its listed stamp (size
with modification time, inode or content tag: :class:`linreg.sources.FoundFile`), the CSV
options and :data:`INSPECTION_FORMAT`; a file whose store lists no stamp is always inspected.
One JSON file per source; a lost or unwritable cache only costs the time it saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from linreg.sources import CsvFormat, DataFile, FoundFile, StorageOptions, canonical_source

# Part of every key: raise it when inspect_file learns something new about a file, so that
# entries written before are not taken for what it would find now.
INSPECTION_FORMAT = 2

_log = logging.getLogger("linreg")


def inspection_key(found: FoundFile, csv: CsvFormat) -> str | None:
    if found.stamp is None:
        return None
    identity = [INSPECTION_FORMAT, found.url, found.stamp, asdict(csv)]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class InspectionCache:
    """The inspections of one source's files, in ``directory``."""

    def __init__(self, directory: Path, source: str, csv: CsvFormat) -> None:
        identity = json.dumps([canonical_source(source), asdict(csv)], sort_keys=True)
        self.path = directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.json"
        self.reused = 0  # inspections taken from the cache by the last validation

    def load(self, storage_options: StorageOptions) -> dict[str, DataFile]:
        """The kept inspections by key (none if there is no readable cache)."""
        try:
            entries = json.loads(self.path.read_text())
            return {key: _data_file(entry, storage_options) for key, entry in entries.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            _log.warning("ignoring the inspection cache %s: %s", self.path, error)
            return {}

    def save(self, inspections: dict[str, DataFile]) -> None:
        """Keep exactly these (the source's files now: removed files are forgotten)."""
        text = json.dumps({key: _entry(data_file) for key, data_file in inspections.items()})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, prefix=".inspections-", delete=False
            ) as handle:
                handle.write(text)
            os.replace(handle.name, self.path)  # readers see the old file or the new one
        except OSError as error:
            _log.warning("cannot keep the inspection cache %s: %s", self.path, error)


def _entry(data_file: DataFile) -> dict[str, Any]:
    # Not the storage options: they may hold credentials.
    return {
        "file_id": data_file.file_id,
        "url": data_file.url,
        "fmt": data_file.fmt,
        "n_rows": data_file.n_rows,
        "columns": list(data_file.columns),
        "numeric_columns": sorted(data_file.numeric_columns),
        "csv": asdict(data_file.csv),
        "excluded": dict(data_file.excluded),
    }


def _data_file(entry: dict[str, Any], storage_options: StorageOptions) -> DataFile:
    csv = entry["csv"]
    return DataFile(
        file_id=entry["file_id"],
        url=entry["url"],
        fmt=entry["fmt"],
        n_rows=int(entry["n_rows"]),
        columns=tuple(entry["columns"]),
        numeric_columns=frozenset(entry["numeric_columns"]),
        storage_options=dict(storage_options),
        csv=CsvFormat(**{**csv, "na_values": tuple(csv["na_values"])}),
        excluded=dict(entry["excluded"]),
    )


def as_found(data_file: DataFile, found: FoundFile) -> DataFile:
    """A kept inspection under the id the file has in this listing."""
    return replace(data_file, file_id=found.file_id)
