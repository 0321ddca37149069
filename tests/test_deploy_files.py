"""scripts/check-deploy (run by .ci/run) accepts the shipped compose file, Kubernetes manifests, App
manifest and Dockerfiles, and refuses broken copies of them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts/check-deploy"), str(directory)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_shipped_files_pass() -> None:
    done = check(ROOT / "deploy")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("path", "old", "new"), [
    ("compose.yaml", "stop_grace_period", "stop_grace_perod"),
    ("k8s/web.yaml", "replicas:", "replica:"),
    ("k8s/worker.yaml", "apiVersion: apps/v1", "apiVersion: apps/v9"),
    ("k8s/worker-multi-gpu.yaml", "secretKeyRef:", "secretKeyReference:"),
    ("Dockerfile", "USER ", "# USER "),
])
def test_a_broken_copy_fails(tmp_path: Path, path: str, old: str, new: str) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    text = (copy / path).read_text()
    assert old in text
    (copy / path).write_text(text.replace(old, new, 1))
    done = check(copy)
    assert done.returncode != 0, f"{path} with {new!r} passed:\n{done.stdout}{done.stderr}"


# -- the checkpoint store: an S3 API shared by every train worker ----------------------------------------

def default_of(value: str) -> str:
    """What a compose `${NAME:-default}` becomes when NAME is not set."""
    match = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return match.group(1) if match else value


def k8s_documents() -> list[dict]:
    return [doc for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def train_workers() -> list[dict]:
    return [doc for doc in k8s_documents() if doc["kind"] == "Deployment"
            and "train" in doc["spec"]["template"]["spec"]["containers"][0]["command"]]


def test_compose_workers_store_in_the_bundled_minio_with_credentials_from_env() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    services = compose["services"]
    env = services["worker"]["environment"]
    store = default_of(env["RETRAIN_STORE_URL"])
    assert store.startswith("s3://") and default_of(env["FSSPEC_S3_ENDPOINT_URL"]) == "http://minio:9000"
    bucket = store.removeprefix("s3://").split("/")[0]
    assert f"mc mb --ignore-existing store/{bucket}" in services["minio-init"]["command"][0]
    assert services["worker"]["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}
    assert services["minio-init"]["depends_on"]["minio"] == {"condition": "service_healthy"}
    # Credentials are the operator's (.env), never values in the file; the worker reads them from env_file.
    assert ".env" in services["worker"]["env_file"]
    for name in ("minio", "minio-init"):
        assert all(v.startswith("${AWS_") for v in services[name]["environment"].values()), name
    assert "AWS_SECRET_ACCESS_KEY" not in env and "volumes" not in services["worker"]


def test_kubernetes_train_workers_share_an_s3_store_with_credentials_from_a_secret() -> None:
    config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]
    assert config["RETRAIN_STORE_URL"].startswith("s3://")
    assert not [d for d in k8s_documents() if d["kind"] == "PersistentVolumeClaim" and "checkpoint" in
                d["metadata"]["name"]], "no per-node volume for checkpoints"
    workers = train_workers()
    assert {w["metadata"]["name"] for w in workers} == {"worker", "worker-multi-gpu"}
    for worker in workers:
        env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        for name, key in (("AWS_ACCESS_KEY_ID", "access-key-id"), ("AWS_SECRET_ACCESS_KEY", "secret-access-key")):
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "retrain-s3", "key": key, "optional": True}


def test_the_multi_gpu_worker_runs_one_process_per_gpu_it_asks_for() -> None:
    for worker in train_workers():
        container = worker["spec"]["template"]["spec"]["containers"][0]
        gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
        nproc = {e["name"]: e.get("value") for e in container["env"]}.get("RETRAIN_NPROC_PER_NODE")
        assert int(nproc or 1) == gpus, worker["metadata"]["name"]
        if gpus > 1:
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/dev/shm" in mounts, "NCCL needs more shared memory than a container's 64 MiB"
    assert max(int(w["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               for w in train_workers()) == 2
