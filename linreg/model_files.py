"""The published model: ``model.pkl`` (joblib) and ``model.json`` (its metadata).

Both are written atomically (temporary file, fsync, rename) and ``model.json`` last, so a
reader that trusts only a ``model.pkl`` whose sha256 matches ``model.json`` never sees a torn
or mixed pair. In an object store (``s3://...``, any fsspec URL) each file is one PUT, which
the store makes visible whole, in the same order.

Beside the live pair, :class:`ModelDirectory` keeps what the model lifecycle needs (see
:mod:`linreg.lifecycle`): ``versions/<N>/`` (each published version's pair, byte for byte),
``pin.json`` (a version held live by a rollback) and ``history.jsonl`` (one JSON record per
change of the live version, and per refused or skipped step).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from linreg.errors import ModelFileError

MODEL_FILE = "model.pkl"
METADATA_FILE = "model.json"
VERSIONS_DIR = "versions"
PIN_FILE = "pin.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lifecycle.lock"
LOCAL_PROTOCOLS = ("file", "local")


def _protocol(location: str | Path) -> str | None:
    text = str(location)
    return text.split("://", 1)[0] if "://" in text else None


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names an object store (any non-local fsspec protocol)."""
    protocol = _protocol(location)
    return protocol is not None and protocol not in LOCAL_PROTOCOLS


def join(location: str | Path, name: str) -> str | Path:
    """``location/name``: a Path for a local directory, a URL for an object store."""
    if is_url(location):
        return f"{str(location).rstrip('/')}/{name}"
    return _local(location) / name


def _local(location: str | Path) -> Path:
    # file:///abs/dir is the local directory /abs/dir.
    return Path(str(location).split("://", 1)[1] if _protocol(location) else location)


def remote_fs(location: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec file system of ``location`` with no cached listing or file info, so a
    poll sees the store as it is now."""
    # Imported here: a service serving a local directory needs no fsspec.
    from fsspec.core import url_to_fs

    fs, _ = url_to_fs(location, **(storage_options or {}))
    fs.invalidate_cache()
    return fs


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a part."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def encode_model(estimator: Any, metadata: dict[str, Any]) -> tuple[bytes, bytes, dict[str, Any]]:
    """``model.pkl``'s bytes, ``model.json``'s bytes, and the metadata document written.

    ``metadata`` gets ``sha256`` (of model.pkl) and ``trained_at`` added.
    """
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    payload = buffer.getvalue()
    document = {
        **metadata,
        "sha256": sha256_bytes(payload),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return payload, (json.dumps(document, indent=2) + "\n").encode(), document


def publish_model(
    out_dir: str | Path,
    estimator: Any,
    metadata: dict[str, Any],
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model.pkl`` then ``model.json`` into ``out_dir``; return the metadata written.

    ``metadata`` gets ``sha256`` (of model.pkl) and ``trained_at`` added. ``out_dir`` may be
    an fsspec URL (opened with ``storage_options``). Only the live pair: a training round
    publishes through :func:`linreg.lifecycle.publish_version`, which also keeps versions.
    """
    payload, encoded, document = encode_model(estimator, metadata)
    ModelDirectory(out_dir, storage_options).write_pair((), payload, encoded)
    return document


class ModelDirectory:
    """The files under one ``--out``: local directory or fsspec URL, written atomically
    (local: temporary file and rename; object store: one PUT per file)."""

    def __init__(
        self, location: str | Path, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.location = location
        self.storage_options = dict(storage_options or {})
        self.remote = is_url(location)

    def path(self, *parts: str) -> str | Path:
        location: str | Path = self.location
        for part in parts:
            location = join(location, part)
        return location if self.remote else _local(location)

    def local_path(self, *parts: str) -> Path:
        """The local path of ``parts`` (a local directory only)."""
        return _local(self.location).joinpath(*parts)

    def read(self, *parts: str) -> bytes | None:
        """The file's bytes, or None if there is no such file."""
        return _read_bytes(self.path(*parts), self.storage_options)

    def write(self, data: bytes, *parts: str) -> None:
        path = self.path(*parts)
        if self.remote:
            remote_fs(str(self.location), self.storage_options).pipe_file(str(path), data)
            return
        local = self.local_path(*parts)
        local.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(local, data)

    def write_pair(self, where: tuple[str, ...], payload: bytes, encoded: bytes) -> None:
        """``model.pkl`` then ``model.json`` (last: a reader trusts the pkl it names)."""
        self.write(payload, *where, MODEL_FILE)
        self.write(encoded, *where, METADATA_FILE)

    def versions(self) -> list[int]:
        """The version numbers kept under ``versions/``, oldest first."""
        root = self.path(VERSIONS_DIR)
        if self.remote:
            fs = remote_fs(str(self.location), self.storage_options)
            try:
                names = [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(str(root))]
            except FileNotFoundError:
                return []
        else:
            local = self.local_path(VERSIONS_DIR)
            # A directory without model.json is a publish that failed part-way (a full disk).
            entries = local.iterdir() if local.is_dir() else ()
            names = [entry.name for entry in entries if (entry / METADATA_FILE).exists()]
        return sorted(int(name) for name in names if name.isdigit())

    def remove_version(self, version: int) -> None:
        root = self.path(VERSIONS_DIR, str(version))
        if self.remote:
            remote_fs(str(self.location), self.storage_options).rm(str(root), recursive=True)
            return
        root = self.local_path(VERSIONS_DIR, str(version))
        for name in (METADATA_FILE, MODEL_FILE):  # metadata first: no json without its pkl
            (root / name).unlink(missing_ok=True)
        for leftover in root.iterdir():
            leftover.unlink()
        root.rmdir()

    def read_json(self, *parts: str) -> Any:
        data = self.read(*parts)
        try:
            return None if data is None else json.loads(data)
        except ValueError as error:
            raise ModelFileError(f"{self.path(*parts)}: not valid JSON ({error})") from None

    def read_lines(self, *parts: str) -> list[dict[str, Any]]:
        """The JSON records of a JSON-lines file (none if it does not exist)."""
        data = self.read(*parts)
        return self._records((data or b"").splitlines(), *parts)

    def read_last_lines(self, count: int, *parts: str) -> list[dict[str, Any]]:
        """The newest ``count`` JSON records of a JSON-lines file (none if it does not
        exist), read from its end: the history gains a record per version, and reading it
        whole made every step of a long-trained model slower."""
        path = self.path(*parts)
        try:
            if self.remote:
                handle = remote_fs(str(self.location), self.storage_options).open(str(path), "rb")
            else:
                handle = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return []
        with handle:
            lines = _last_lines(handle, count)
        return self._records(lines, *parts, from_end=len(lines))

    def _records(
        self, lines: list[bytes], *parts: str, from_end: int | None = None
    ) -> list[dict[str, Any]]:
        records = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    where = (
                        f"line {number}"
                        if from_end is None
                        else f"line {from_end - number + 1} from the end"
                    )
                    raise ModelFileError(
                        f"{self.path(*parts)}: {where} is not valid JSON"
                    ) from None
        return records

    def append_line(self, record: dict[str, Any], *parts: str) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        if self.remote:
            # Objects cannot be appended to: read, add, one PUT (the lock serialises writers).
            self.write((self.read(*parts) or b"") + line, *parts)
            return
        path = self.local_path(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self, *parts: str) -> None:
        path = self.path(*parts)
        if self.remote:
            fs = remote_fs(str(self.location), self.storage_options)
            if fs.exists(str(path)):
                fs.rm_file(str(path))
            return
        self.local_path(*parts).unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise changes of the live pair, pin and history between processes sharing a
        local directory; object stores have no lock (the training lock orders their rounds)."""
        if self.remote:
            yield
            return
        root = _local(self.location)
        root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)


_TAIL_BLOCK = 64 * 1024


def _last_lines(handle, count: int) -> list[bytes]:
    """The last ``count`` non-empty lines of a binary file, read backwards in blocks."""
    position = handle.seek(0, os.SEEK_END)
    blocks: list[bytes] = []
    newlines = 0
    while position > 0:
        step = min(_TAIL_BLOCK, position)
        position -= step
        handle.seek(position)
        blocks.append(handle.read(step))
        newlines += blocks[-1].count(b"\n")
        if newlines > count:
            # The text before the first newline may be the end of a longer line.
            lines = b"".join(reversed(blocks)).split(b"\n")[1:]
            lines = [line for line in lines if line.strip()]
            if len(lines) >= count:
                return lines[-count:]
    return [line for line in b"".join(reversed(blocks)).split(b"\n") if line.strip()][-count:]


def _read_bytes(path: str | Path, storage_options: Mapping[str, Any] | None) -> bytes | None:
    """The file's bytes, or None if there is no such file."""
    try:
        if isinstance(path, Path):
            return path.read_bytes()
        return remote_fs(path, storage_options).cat_file(path)
    except FileNotFoundError:
        return None


def read_metadata(
    out_dir: str | Path, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The published ``model.json``, or None if nothing is published."""
    path = join(out_dir, METADATA_FILE)
    try:
        data = _read_bytes(path, storage_options)
        return None if data is None else json.loads(data)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: unreadable model metadata ({error})") from None


def load_verified_model(
    out_dir: str | Path, storage_options: Mapping[str, Any] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load ``model.pkl`` only if its sha256 matches ``model.json``."""
    metadata = read_metadata(out_dir, storage_options)
    if metadata is None:
        raise ModelFileError(f"{out_dir}: no {METADATA_FILE} published")
    path = join(out_dir, MODEL_FILE)
    data = _read_bytes(path, storage_options)
    if data is None:
        raise ModelFileError(f"{path}: not found beside {METADATA_FILE}")
    if sha256_bytes(data) != metadata.get("sha256"):
        raise ModelFileError(f"{path}: sha256 does not match {METADATA_FILE}; not loading it")
    return joblib.load(io.BytesIO(data)), metadata
