"""The published model: ``model.pkl`` (joblib) and ``model.json`` (its metadata).

Both are written atomically (temporary file, fsync, rename) and ``model.json`` last, so a
reader that trusts only a ``model.pkl`` whose sha256 matches ``model.json`` never sees a torn
or mixed pair.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from linreg.errors import ModelFileError

MODEL_FILE = "model.pkl"
METADATA_FILE = "model.json"


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


def publish_model(out_dir: str | Path, estimator: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``model.pkl`` then ``model.json`` into ``out_dir``; return the metadata written.

    ``metadata`` gets ``sha256`` (of model.pkl) and ``trained_at`` added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    payload = buffer.getvalue()
    document = {
        **metadata,
        "sha256": sha256_bytes(payload),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomic(out / MODEL_FILE, payload)
    write_atomic(out / METADATA_FILE, (json.dumps(document, indent=2) + "\n").encode())
    return document


def read_metadata(out_dir: str | Path) -> dict[str, Any] | None:
    """The published ``model.json``, or None if nothing is published."""
    path = Path(out_dir) / METADATA_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: unreadable model metadata ({error})") from None


def load_verified_model(out_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load ``model.pkl`` only if its sha256 matches ``model.json``."""
    metadata = read_metadata(out_dir)
    if metadata is None:
        raise ModelFileError(f"{out_dir}: no {METADATA_FILE} published")
    data = (Path(out_dir) / MODEL_FILE).read_bytes()
    if sha256_bytes(data) != metadata.get("sha256"):
        raise ModelFileError(
            f"{Path(out_dir) / MODEL_FILE}: sha256 does not match {METADATA_FILE}; not loading it"
        )
    return joblib.load(io.BytesIO(data)), metadata
