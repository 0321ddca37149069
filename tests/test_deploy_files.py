"""scripts/check-deploy (run by .ci/run) accepts the shipped compose file, Kubernetes manifests, App
manifest and Dockerfiles, and refuses broken copies of them."""

from __future__ import annotations

import argparse
import re
import shlex
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
    ("k8s/multi-node/job.yaml", "subdomain:", "subDomain:"),
    ("k8s/multi-node/job.yaml", "apiVersion: batch/v1", "apiVersion: batch/v2"),
    ("k8s/multi-node/rendezvous-service.yaml", "clusterIP: None", "clusterIp: None"),
    ("k8s/multi-node/group-volume.yaml", "accessModes:", "accessMode:"),
    ("k8s/multi-node/kustomization.yaml", "  - job.yaml\n", ""),  # listed: exactly the folder's files
    ("k8s/kustomization.yaml", "  - worker.yaml\n", "  - worker.yaml\n  - multi-node\n"),  # never the App's
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


# -- the documented multi-node path (docs/distributed.md): not deployed by the App's kustomization -------

MULTI_NODE = ROOT / "deploy/k8s/multi-node"


def multi_node(kind: str) -> dict:
    [doc] = [doc for path in sorted(MULTI_NODE.glob("*.yaml")) if path.name != "kustomization.yaml"
             for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == kind]
    return doc


def torchrun_args(container: dict) -> argparse.Namespace:
    """The pod's command as torchrun itself parses it, with Kubernetes' $(VAR) taken from the container's env."""
    command = container["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"], shlex.join(command)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in command[3:]]
    from torch.distributed.run import get_args_parser

    return get_args_parser().parse_args(args)


def test_the_multi_node_folder_is_its_own_kustomization_and_not_the_apps() -> None:
    apps = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())["resources"]
    assert not [r for r in apps if "multi-node" in r]
    own = yaml.safe_load((MULTI_NODE / "kustomization.yaml").read_text())
    files = sorted(p.name for p in MULTI_NODE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(own["resources"]) == files
    assert own["namespace"] == "retrain"
    for path in MULTI_NODE.glob("*.yaml"):
        said = " ".join(path.read_text().split()).lower()  # the header comment says what the folder is
        assert "multi-node path" in said and "deploy/k8s/kustomization.yaml" in said, path.name
        for doc in yaml.safe_load_all(path.read_text()):
            if doc.get("kind") != "Kustomization":
                assert doc["metadata"]["namespace"] == "retrain", path.name


def test_one_torchrun_agent_per_node_with_one_rank_per_gpu() -> None:
    job = multi_node("Job")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = torchrun_args(container)
    assert spec["completionMode"] == "Indexed" and pod["restartPolicy"] == "Never"
    assert spec["parallelism"] == spec["completions"] == int(args.nnodes) == 2
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == int(args.nproc_per_node) == 8
    assert args.module and args.training_script == "workers.trainer.rank" and not args.standalone
    assert args.max_restarts == 0 and spec["backoffLimit"] == 0, "a lost node ends the group, as a lost rank does"
    session = next(e["value"] for e in container["env"] if e["name"] == "SESSION_ID")
    assert args.rdzv_backend == "c10d" and args.rdzv_id == session
    # torchrun ignores --node-rank for c10d (with a warning): the rendezvous numbers the nodes.
    assert not any(a.startswith("--node-rank") for a in container["command"])


def test_the_rendezvous_endpoint_is_pod_0_through_the_headless_service() -> None:
    job, service = multi_node("Job"), multi_node("Service")
    pod = job["spec"]["template"]
    [container] = pod["spec"]["containers"]
    host, port = torchrun_args(container).rdzv_endpoint.split(":")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"  # an Indexed Job's pod 0
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert int(port) in {p["containerPort"] for p in container["ports"]}


def test_every_node_sees_the_groups_folder_and_nccl_gets_its_memory() -> None:
    job, claim = multi_node("Job"), multi_node("PersistentVolumeClaim")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    folder = torchrun_args(container).training_script_args
    assert folder == [f"/group/{next(e['value'] for e in container['env'] if e['name'] == 'SESSION_ID')}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert mounts["/group"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on different nodes mount it at once"
    assert mounts["/dev/shm"]["emptyDir"]["medium"] == "Memory"
    env = {e["name"] for e in container["env"]}
    assert "NCCL_SOCKET_IFNAME" in env
    assert "envFrom" not in container and not [e for e in container["env"] if "valueFrom" in e], "ranks need no secrets"


def test_the_multi_node_pods_run_the_workers_image_as_the_namespace_demands() -> None:
    worker = next(d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker")
    pod = multi_node("Job")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == worker["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
