"""Training on the cluster: the chart's PyTorchJob and indexed Job run torchrun correctly.

The rendered commands are parsed by torchrun's own argument parser (with the environment the
Kubeflow training-operator injects, for the PyTorchJob), and the rendered experiment file is
loaded by the training package's config loader, so a chart that would start a job that dies
on its first line fails here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import yaml
from helm_render import RELEASE, VALUE_SETS, one, render_objects

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")
torch_run = pytest.importorskip("torch.distributed.run")

from helm_render import CHART_DIR  # noqa: E402

EXPERIMENT = "/etc/pulmoseg-train/experiment.yaml"


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def torchrun_args(command: list[str], env: dict[str, str] | None = None) -> Any:
    """Parse ``python3 -m torch.distributed.run ...`` as torchrun itself would."""
    assert command[:3] == ["python3", "-m", "torch.distributed.run"], command
    with mock.patch.dict(os.environ, env or {}, clear=False):
        return torch_run.get_args_parser().parse_args(command[3:])


def test_no_training_objects_unless_enabled(chart: Any) -> None:
    kinds = {o["kind"] for o in render_objects(chart)}
    assert not kinds & {"Job", "PyTorchJob"}


def test_indexed_job_runs_static_rendezvous_on_pod_zero(chart: Any) -> None:
    objects = render_objects(chart, VALUE_SETS["training-indexed"])
    job = one(objects, "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    service = one(objects, "Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    # The rendezvous Service selects exactly the training pods, not the serving ones.
    pod_labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    serving = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not serving.items() <= pod_labels.items(), "the serving Service would route to trainers"

    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    command = [c.replace("$(NODE_RANK)", "1") for c in container["command"]]
    args = torchrun_args(command)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "4", 1)
    # Pod 0 of an indexed Job is <job>-0, reachable as <job>-0.<subdomain>.
    assert args.master_addr == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert args.master_port == 29500 == service["spec"]["ports"][0]["port"]
    assert args.module and args.training_script == "training.experiment"
    assert args.training_script_args == ["--config", EXPERIMENT, "--resume", "--no-progress"]
    # 4 processes x 1 GPU each.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_pytorchjob_leaves_rendezvous_to_the_training_operator(chart: Any) -> None:
    job = one(render_objects(chart, VALUE_SETS["training-pytorchjob"]), "PyTorchJob")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    assert specs["Worker"]["replicas"] == 2
    assert job["spec"]["nprocPerNode"] == "1"
    for role in ("Master", "Worker"):
        (container,) = specs[role]["template"]["spec"]["containers"]
        assert container["name"] == "pytorch", "the operator injects its env into 'pytorch'"
        operator_env = {
            "PET_NNODES": "3",
            "PET_NPROC_PER_NODE": "1",
            "PET_NODE_RANK": "2",
            "PET_MASTER_ADDR": "demo-pulmoseg-train-master-0",
            "PET_MASTER_PORT": "23456",
        }
        args = torchrun_args(container["command"], operator_env)
        assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("3", "1", 2)
        assert args.master_addr == "demo-pulmoseg-train-master-0"
        assert args.training_script == "training.experiment"


def test_single_node_pytorchjob_has_no_workers(chart: Any) -> None:
    values = {"training": {"enabled": True, "kind": "PyTorchJob", "nodes": 1}}
    job = one(render_objects(chart, values), "PyTorchJob")
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}


@pytest.mark.parametrize("value_set", ["training-indexed", "training-pytorchjob"])
def test_experiment_file_is_a_valid_training_config(chart: Any, value_set: str) -> None:
    from training.config import config_from_dict

    objects = render_objects(chart, VALUE_SETS[value_set])
    config_maps = [
        o for o in objects if o["kind"] == "ConfigMap" and "experiment.yaml" in o["data"]
    ]
    (config_map,) = config_maps
    config = config_from_dict(yaml.safe_load(config_map["data"]["experiment.yaml"]))
    assert str(config.output_dir).startswith("/runs/"), "checkpoints must land on the output PVC"
    assert str(config.data.root) == "/data"


def test_training_pods_get_shared_memory_and_the_claims(chart: Any) -> None:
    job = one(render_objects(chart, VALUE_SETS["training-indexed"]), "Job")
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["data"]["persistentVolumeClaim"] == {
        "claimName": "pulmoseg-data",
        "readOnly": True,
    }
    assert volumes["runs"]["persistentVolumeClaim"] == {"claimName": "pulmoseg-runs"}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/dev/shm"] == "shm"
    assert mounts["/runs"] == "runs"


def test_cpu_only_training_requests_no_gpu(chart: Any) -> None:
    values = {"training": {"enabled": True, "gpusPerProc": 0}}
    job = one(render_objects(chart, values), "Job")
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_training_needs_its_claims(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="training.dataClaim must name"):
        chart.render({"training": {"enabled": True, "dataClaim": ""}}, name=RELEASE)
