"""The images of the root Dockerfile, built and run for real: `make image`'s script builds
both targets (docker when a daemon answers, else buildah on a debootstrapped Debian base when
no registry answers), then the serving image's own entrypoint runs as uid 10001 over a model
directory mounted read-only and answers over HTTP, and the training image validates a data
set with its entrypoint, `python main.py --mode validate`. Containers start with
`buildah run` (a container runtime's `run` cannot start in this sandbox) and are stopped by
PID. The base is cached (LINREG_CACHE) and an image built from the same inputs is kept, so
a second run rebuilds nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from linreg.synthetic import write_dataset
from tests.conftest import FIGURES
from tests.integration.processes import free_port, start, stop, wait_until
from tests.serving.support import TrainedModel, expected_predictions, train

# A cold build of both images takes about 20 minutes here (vfs storage on 2 busy cores).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2700)]

PROJECT = Path(__file__).resolve().parents[2]
BUILD = PROJECT / "deployments" / "image" / "build.sh"
TAG = os.environ.get("IMAGE_TAG", "dev")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
APP = "10001:10001"
ROWS = [[1.5, -2.0, 300.0, 4.0], [0.0, 0.0, 0.0, 0.0]]


def buildah(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*BUILDAH, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check:
        assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result


@pytest.fixture(scope="module")
def images(request) -> dict[str, dict]:
    """Both images, built by the script `make image` runs; their image configurations."""
    assert shutil.which("buildah"), "buildah is missing: make image-tools"
    started = time.monotonic()
    built = subprocess.run(
        [str(BUILD), "serving", "training"],
        cwd=PROJECT,
        env={**os.environ, "IMAGE_TAG": TAG, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=2400,
    )
    elapsed = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    configs, sizes = {}, {}
    for target in ("serving", "training"):
        name = f"linreg-{target}:{TAG}"
        configs[target] = json.loads(buildah("inspect", "--type", "image", name).stdout)
        sizes[target] = buildah("images", "--noheading", "--format", "{{.Size}}", name).stdout
    steps = "; ".join(line[8:] for line in built.stderr.splitlines() if line.startswith("[image]"))
    request.config.stash.setdefault(FIGURES, []).append(
        f"images: serving {sizes['serving'].strip()}, training {sizes['training'].strip()} "
        f"(uncompressed); make image's build took {elapsed:.0f} s this run ({steps})"
    )
    return configs


@pytest.fixture
def container(images) -> Iterator[callable]:
    """Working containers of the images (buildah from), removed at the end."""
    made: list[str] = []

    def make(target: str, **env: str) -> str:
        name = buildah("from", "--quiet", "--pull=never", f"linreg-{target}:{TAG}").stdout.strip()
        made.append(name)
        for key, value in env.items():
            buildah("config", "--env", f"{key}={value}", name)
        return name

    yield make
    for name in made:
        buildah("rm", name, check=False)


def entrypoint(config: dict) -> list[str]:
    oci = config["OCIv1"]["config"]
    return [*oci.get("Entrypoint", []), *oci.get("Cmd", [])]


def run_as_app(name: str, *command: str, mounts: tuple[str, ...] = ()) -> list[str]:
    volumes = [arg for mount in mounts for arg in ("-v", mount)]
    return [
        *BUILDAH,
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--user",
        APP,
        *volumes,
        name,
        "--",
        *command,
    ]


def shared_dir(prefix: str) -> Path:
    """A directory uid 10001 can read (pytest's tmp_path is private to the test's user)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


def publish_readable(model: TrainedModel, out: Path, version: int) -> None:
    """Publish as the publisher does (model.pkl, then model.json, each by rename), with files
    the service's uid can read: staged, made world-readable, then renamed into place."""
    with tempfile.TemporaryDirectory(dir=out.parent) as staging:
        model.publish(Path(staging), version)
        for name in ("model.pkl", "model.json"):
            (Path(staging) / name).chmod(0o644)
            os.replace(Path(staging) / name, out / name)


def no_compiler(name: str) -> subprocess.CompletedProcess:
    probe = "for c in gcc cc c++ g++ clang; do command -v $c; done; ls /usr/bin/*-gcc* 2>/dev/null"
    return subprocess.run(
        run_as_app(name, "/bin/sh", "-c", probe + "; true"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[TrainedModel, TrainedModel]:
    return train(tmp_path_factory.mktemp("img-a"), 7), train(tmp_path_factory.mktemp("img-b"), 8)


def test_the_serving_image_serves_a_read_only_model_as_uid_10001(
    images, container, models, figures
):
    first, second = models
    root = shared_dir("linreg-image-")
    models_dir = root / "models"
    models_dir.mkdir(mode=0o755)
    models_dir.chmod(0o755)
    publish_readable(first, models_dir, version=1)
    port = free_port()
    name = container("serving", HOST="127.0.0.1", PORT=str(port), MODEL_CHECK_INTERVAL_MS="200")
    command = run_as_app(name, *entrypoint(images["serving"]), mounts=(f"{models_dir}:/models:ro",))
    assert entrypoint(images["serving"])[:3] == ["gunicorn", "-c", "/etc/linreg/gunicorn.conf.py"]
    process = start(command, dict(os.environ), root / "serving.log", cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 120, "the serving container's /readyz")
        answer = httpx.post(f"{base}/predict", json={"instances": ROWS}, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == 1
        assert body["predictions"] == pytest.approx(
            expected_predictions(first.metadata, ROWS).tolist(), rel=1e-12
        )
        bad = httpx.post(f"{base}/predict", json={"instances": [[1.0]]}, timeout=10)
        assert bad.status_code == 422 and "error" in bad.json()

        publish_readable(second, models_dir, version=2)

        def serves_version_2():
            reply = httpx.post(f"{base}/predict", json={"instances": ROWS}, timeout=10)
            return reply.status_code == 200 and reply.json()["model_version"] == 2 and reply

        reply = wait_until(serves_version_2, 60, "version 2 to be served", interval=0.3)
        assert reply.json()["predictions"] == pytest.approx(
            expected_predictions(second.metadata, ROWS).tolist(), rel=1e-12
        )

        # The service's processes (gunicorn's arbiter and workers) run as uid 10001.
        gunicorns = [
            child
            for child in psutil.Process(process.pid).children(recursive=True)
            if "gunicorn" in " ".join(child.cmdline())
        ]
        assert len(gunicorns) >= 2
        assert {p.uids().real for p in gunicorns} == {10001}
        assert {p.uids().effective for p in gunicorns} == {10001}
        # The mount is read-only, even for a process of the image's user.
        write = subprocess.run(
            run_as_app(name, "touch", "/models/x", mounts=(f"{models_dir}:/models:ro",)),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert write.returncode != 0 and "Read-only" in write.stderr
        compilers = no_compiler(name)
        assert compilers.returncode == 0 and compilers.stdout.strip() == "", compilers.stdout
        figures.append(
            f"serving image: /readyz 200, /predict v1 then v2 after a publish into the "
            f"read-only mount, {len(gunicorns)} gunicorn processes as uid 10001, no compiler"
        )
    finally:
        stop(process)
        shutil.rmtree(root, ignore_errors=True)


def test_the_training_image_validates_data_with_main_py(images, container, figures):
    root = shared_dir("linreg-image-")
    data = root / "data"
    write_dataset(data, n_rows=3_000, n_features=4, shard_rows=1_000, seed=3)
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    name = container("training")
    config = images["training"]["OCIv1"]["config"]
    assert config["Entrypoint"] == ["python", "main.py"] and config["WorkingDir"] == "/app"
    try:
        validated = subprocess.run(
            run_as_app(
                name,
                *config["Entrypoint"],
                "--mode",
                "validate",
                "--data",
                "/data",
                mounts=(f"{data}:/data:ro",),
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr
        assert "3,000 rows" in validated.stdout, validated.stdout
        worker = subprocess.run(
            run_as_app(
                name,
                "python",
                "-c",
                "import os, prefect, prefect_dask, distributed; "
                "print(os.getuid(), prefect.__version__, distributed.__version__)",
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stderr
        uid, prefect_version, _ = worker.stdout.split()
        assert (uid, prefect_version) == ("10001", "3.8.8")
        compilers = no_compiler(name)
        assert compilers.returncode == 0 and compilers.stdout.strip() == "", compilers.stdout
        figures.append(
            "training image: main.py --mode validate passed on 3,000 rows as uid 10001; "
            f"prefect {prefect_version}, prefect-dask and distributed import; no compiler"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
