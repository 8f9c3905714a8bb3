"""The published model: ``model.pkl`` (joblib) and ``model.json`` (its metadata).

Both are written atomically (temporary file, fsync, rename) and ``model.json`` last, so a
reader that trusts only a ``model.pkl`` whose sha256 matches ``model.json`` never sees a torn
or mixed pair. In an object store (``s3://...``, any fsspec URL) each file is one PUT, which
the store makes visible whole, in the same order.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from linreg.errors import ModelFileError

MODEL_FILE = "model.pkl"
METADATA_FILE = "model.json"
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


def publish_model(
    out_dir: str | Path,
    estimator: Any,
    metadata: dict[str, Any],
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model.pkl`` then ``model.json`` into ``out_dir``; return the metadata written.

    ``metadata`` gets ``sha256`` (of model.pkl) and ``trained_at`` added. ``out_dir`` may be
    an fsspec URL (opened with ``storage_options``).
    """
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    payload = buffer.getvalue()
    document = {
        **metadata,
        "sha256": sha256_bytes(payload),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    encoded = (json.dumps(document, indent=2) + "\n").encode()
    if is_url(out_dir):
        # One PUT each (pipe_file): an object appears whole or not at all; model.json last.
        fs = remote_fs(str(out_dir), storage_options)
        fs.pipe_file(str(join(out_dir, MODEL_FILE)), payload)
        fs.pipe_file(str(join(out_dir, METADATA_FILE)), encoded)
        return document
    out = _local(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / MODEL_FILE, payload)
    write_atomic(out / METADATA_FILE, encoded)
    return document


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
