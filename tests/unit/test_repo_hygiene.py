"""No secret, token or absolute local path in the repository; bandit finds nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SECRET_PATTERNS = {
    "Prefect Cloud API key": r"\bpnu_[A-Za-z0-9]{20,}",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{30,}",
    "AWS access key": r"\bAKIA[0-9A-Z]{16}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "credential assignment": r"(?i)\b(api_key|password|secret|token)\s*[:=]\s*['\"][^'\"$<{]{8,}",
    "credentials in a URL": r"://[^/\s:@]+:[^/\s:@]+@",
}
LOCAL_PATH = r"(?<![\w.])/(?:work|root|home/\w+|Users/\w+)/"


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files = []
    for name in names.splitlines():
        path = PROJECT / name
        if path.is_file() and path.suffix not in {".png", ".parquet", ".pkl"}:
            files.append(path)
    return files


@pytest.mark.parametrize(("kind", "pattern"), SECRET_PATTERNS.items(), ids=list(SECRET_PATTERNS))
def test_no_secrets(kind, pattern):
    hits = [
        f"{path.relative_to(PROJECT)}:{number}"
        for path in _tracked_text_files()
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1)
        if re.search(pattern, line)
    ]
    assert not hits, f"{kind} in {hits}"


def test_no_absolute_local_paths():
    hits = [
        f"{path.relative_to(PROJECT)}:{number}: {line.strip()}"
        for path in _tracked_text_files()
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1)
        if re.search(LOCAL_PATH, line)
    ]
    assert not hits, hits


def test_bandit_finds_nothing():
    packages = [
        p for p in ("linreg", "tasks", "flows", "serving", "main.py") if (PROJECT / p).exists()
    ]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "bandit"), "-q", "-r", *packages],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
