"""Multi-node training through Kubeflow Trainer v2: the TrainJob body built for a strategy, the
create + wait loop against a recorder standing in for the Kubernetes API, the component run end
to end against it, its task_config passthroughs in a compiled pipeline, and the committed example.

No cluster: the Kubernetes ``CustomObjectsApi`` / ``CoreV1Api`` are replaced at their boundary.
"""

# no `from __future__ import annotations`: kfp reads the test pipeline's real types
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
import yaml
from kfp import compiler, dsl
from kubernetes.client.exceptions import ApiException

from mentoring.components.train_distributed import train_distributed
from mentoring.config import Params, load_params
from mentoring.orchestration import adapter, trainjob
from mentoring.orchestration.trainjob import (
    COMPLETE,
    CREATED,
    RUNNING,
    Placement,
    TrainJobClient,
    TrainJobError,
    TrainJobTimeout,
)
from mentoring.pipelines import platform

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "pipelines" / "examples" / "trainjob.yaml"
STRATEGY = "transfer+omnia"
#: statuses of a TrainJob as the Trainer writes them
ST_CREATED: dict[str, Any] = {
    "conditions": [{"type": "Created", "status": "True", "reason": "JobsCreationSucceeded"}]
}
ST_RUNNING: dict[str, Any] = {
    **ST_CREATED,
    "jobsStatus": [
        {"name": "node", "active": 2, "ready": 2, "failed": 0, "succeeded": 0, "suspended": 0}
    ],
}
ST_COMPLETE: dict[str, Any] = {
    "conditions": [
        *ST_CREATED["conditions"],
        {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "done"},
    ]
}
ST_FAILED: dict[str, Any] = {
    "conditions": [
        *ST_CREATED["conditions"],
        {
            "type": "Failed",
            "status": "True",
            "reason": "FailedJobs",
            "message": "jobset failed: job node-1 BackoffLimitExceeded",
        },
    ]
}


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def _files(tmp: Path, run_id: str = "run-1") -> trainjob.JobFiles:
    return trainjob.job_files(str(tmp / "store"), run_id, STRATEGY, tmp / "line.parquet")


def _body(params: Params, tmp: Path, placement: Placement | None = None) -> dict[str, Any]:
    spec = trainjob.strategy_spec(
        params,
        STRATEGY,
        _files(tmp),
        name=trainjob.job_name("run-1", STRATEGY),
        namespace="team-a",
        placement=placement or trainjob.default_placement(params.kfp, "wf-kfp-workspace"),
        num_nodes=2,
        run_id="run-1",
        git_commit="c" * 40,
        deadline_s=3600,
    )
    return trainjob.build_trainjob(spec)


def _node_pod(body: dict[str, Any]) -> dict[str, Any]:
    (patch,) = body["spec"]["runtimePatches"]
    assert patch["manager"] == trainjob.MANAGER
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"
    pod: dict[str, Any] = rjob["template"]["spec"]["template"]["spec"]
    return pod


# --------------------------------------------------------------------------- the body


def test_body_for_a_strategy(params: Params, tmp_path: Path) -> None:
    cfg = params.kfp
    body = _body(params, tmp_path)
    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert body["metadata"]["namespace"] == "team-a"
    name = body["metadata"]["name"]
    assert name == trainjob.job_name("run-1", STRATEGY) and len(name) <= 40
    assert name != trainjob.job_name("run-2", STRATEGY)  # one job per run and strategy
    assert body["metadata"]["labels"]["mentoring/strategy"] == "transfer-omnia"
    spec = body["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    assert spec["activeDeadlineSeconds"] == 3600
    trainer = spec["trainer"]
    assert trainer["image"] == cfg.gpu_image
    # torchrun takes its rendezvous from the runtime's PET_* variables
    assert trainer["command"] == ["torchrun", "-m", "mentoring.stages.train"]
    args = trainer["args"]
    files = _files(tmp_path)
    assert args[args.index("--strategy") + 1] == STRATEGY
    assert args[args.index("--params") + 1] == str(files.params)
    assert args[args.index("--model") + 1] == str(files.model)
    assert args[args.index("--checkpoint") + 1] == str(
        adapter.checkpoint(str(tmp_path / "store"), "run-1", STRATEGY, tmp_path)
    )
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == cfg.gpu.count
    res = trainer["resourcesPerNode"]
    gpus = str(cfg.gpu.count)
    assert res["limits"][cfg.gpu.resource] == gpus and res["requests"][cfg.gpu.resource] == gpus
    train_res = cfg.resources_of("train")
    assert res["requests"]["cpu"] == train_res.cpu
    assert res["limits"]["memory"] == train_res.memory_limit
    env = {e["name"]: e for e in trainer["env"]}
    assert env["MENTORING_PIPELINE_RUN"]["value"] == "run-1"
    assert env["MENTORING_GIT_COMMIT"]["value"] == "c" * 40
    for secret, keys in (
        (cfg.mlflow_secret, platform.MLFLOW_KEYS),
        (cfg.s3_secret, platform.S3_KEYS),
    ):
        for key, var in keys.items():
            assert "value" not in env[var]
            assert env[var]["valueFrom"]["secretKeyRef"] == {
                "name": secret,
                "key": key,
                "optional": True,
            }
    assert not {n for n in env if n.startswith("PET_")}  # the runtime sets those
    pod = _node_pod(body)
    assert pod["nodeSelector"] == cfg.gpu.node_selector
    assert pod["tolerations"] == [
        {"key": cfg.gpu.toleration_key, "operator": "Exists", "effect": cfg.gpu.toleration_effect}
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": cfg.gpu.shm_size}
    assert volumes["kfp-workspace"]["persistentVolumeClaim"] == {"claimName": "wf-kfp-workspace"}
    (container,) = pod["containers"]
    assert container["name"] == "node" and "env" not in container  # forbidden on `node`
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/kfp-workspace": "kfp-workspace"}
    assert "podSpecOverrides" not in spec and "podTemplateOverrides" not in spec


def test_no_credential_value_in_the_body(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "AWS_ACCESS_KEY_ID": "AKIA-TEST-7f3c9e",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-test-value-51d2",
        "MLFLOW_TRACKING_URI": "http://mlflow.internal.test:5000",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-test-88a1",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    text = yaml.safe_dump(_body(params, tmp_path))
    for key, value in secrets.items():
        assert value not in text, f"value of {key} in the TrainJob"
    assert params.kfp.mlflow_secret in text and params.kfp.s3_secret in text


def test_secret_keys_are_platforms() -> None:
    """The nodes get the same secret keys as every pipeline task (pipelines/platform.py)."""
    assert trainjob.MLFLOW_KEYS == platform.MLFLOW_KEYS
    assert trainjob.S3_KEYS == platform.S3_KEYS


@pytest.mark.filterwarnings("ignore:Support for class-based `config`")  # the SDK's own models
def test_constants_are_the_sdks() -> None:
    """The API names, phases and pod labels are the Kubeflow SDK's (kubeflow.trainer)."""
    from kubeflow.trainer.constants import constants as sdk

    assert (trainjob.GROUP, trainjob.VERSION, trainjob.KIND, trainjob.PLURAL) == (
        sdk.GROUP,
        sdk.VERSION,
        sdk.TRAINJOB_KIND,
        sdk.TRAINJOB_PLURAL,
    )
    assert (CREATED, RUNNING, COMPLETE, trainjob.FAILED) == (
        sdk.TRAINJOB_CREATED,
        sdk.TRAINJOB_RUNNING,
        sdk.TRAINJOB_COMPLETE,
        sdk.TRAINJOB_FAILED,
    )
    assert trainjob.NODE == sdk.NODE
    assert (trainjob.JOBSET_LABEL, trainjob.RJOB_LABEL, trainjob.INDEX_LABEL) == (
        sdk.JOBSET_NAME_LABEL,
        sdk.JOBSET_RJOB_NAME_LABEL,
        sdk.JOB_INDEX_LABEL,
    )
    assert trainjob.RESERVED_ENV >= {sdk.TORCH_ENV_NUM_PROC_PER_NODE}


def test_args_are_mentoring_train_options(params: Params, tmp_path: Path) -> None:
    """``python -m mentoring.stages.train`` takes `mentoring train`'s options: every one the
    TrainJob passes exists there."""
    from mentoring.cli import app

    command = typer.main.get_command(app)
    train = command.commands["train"]  # type: ignore[attr-defined]
    options = {o for p in train.params for o in p.opts}
    args = _body(params, tmp_path)["spec"]["trainer"]["args"]
    passed = [a for a in args if a.startswith("--")]
    assert passed and set(passed) <= options


def test_task_config_goes_to_the_nodes(params: Params, tmp_path: Path) -> None:
    """What a KFP backend forwards (the driver's TaskConfig JSON) is what the nodes get."""
    task_config = {
        "resources": {
            "requests": {"cpu": "6", "memory": "24Gi"},
            "limits": {"cpu": "12", "memory": "48Gi", "nvidia.com/gpu": "4"},
        },
        "env": [
            {"name": "AWS_ENDPOINT_URL", "value": "http://minio.test:9000"},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": "secret"}},
            },
        ],
        "node_selector": {"pool": "a100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        "affinity": None,
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "team-data"}}],
        "volume_mounts": [{"name": "data", "mountPath": "/mnt/data"}],
    }
    placement = trainjob.placement_of(task_config, params.kfp)
    body = _body(params, tmp_path, placement)
    trainer = body["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 4  # one process per GPU of the task
    assert trainer["resourcesPerNode"]["requests"] == {
        "cpu": "6",
        "memory": "24Gi",
        "nvidia.com/gpu": "4",
    }
    env = {e["name"]: e for e in trainer["env"]}
    assert env["AWS_ENDPOINT_URL"] == {
        "name": "AWS_ENDPOINT_URL",
        "value": "http://minio.test:9000",
    }
    # the task's secret reference wins over the default one of the same variable
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "team-s3"
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mentoring-mlflow"
    pod = _node_pod(body)
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == task_config["tolerations"]
    assert "affinity" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["data", "dshm"]
    # an empty TaskConfig (local runner, backend < 2.15): the kfp section's settings
    assert trainjob.placement_of({k: None for k in task_config}, params.kfp, "w") == (
        trainjob.default_placement(params.kfp, "w")
    )


def test_cpu_nodes(params: Params, tmp_path: Path) -> None:
    cpu = load_params(REPO / "params.yaml", {"kfp.gpu.count": 0, "kfp.store": "pvc"})
    body = _body(cpu, tmp_path)
    trainer = body["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 1
    assert "nvidia.com/gpu" not in json.dumps(trainer["resourcesPerNode"])
    pod = _node_pod(body)
    assert "nodeSelector" not in pod and "tolerations" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[trainjob.PVC_VOLUME]["persistentVolumeClaim"]["claimName"] == cpu.kfp.pvc_name


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"name": "Bad_Name"}, "RFC 1035"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"env": {"AWS_SECRET_ACCESS_KEY": "literal"}}, "credential given as a literal"),
        ({"env": {"PET_NNODES": "4"}}, "set by the Torch runtime"),
        (
            {"placement": Placement(volumes=({"name": "dshm", "emptyDir": {}},))},
            "duplicate volume",
        ),
    ],
)
def test_bad_specs_are_refused(change: dict[str, Any], error: str) -> None:
    base = {"name": "ok", "namespace": "ns", "image": "img", "command": ("torchrun",)}
    with pytest.raises(ValueError, match=error):
        trainjob.build_trainjob(trainjob.TrainJobSpec(**{**base, **change}))


def test_unknown_field_is_refused(params: Params, tmp_path: Path) -> None:
    """The body is checked against the installed Trainer API: Trainer >= 2.2 dropped
    podTemplateOverrides for runtimePatches, and a typo would be pruned by the API server."""
    body = _body(params, tmp_path)
    trainjob.check_fields(body)
    body["spec"]["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    with pytest.raises(ValueError, match=r"spec\.podTemplateOverrides"):
        trainjob.check_fields(body)
    body = _body(params, tmp_path)
    body["spec"]["trainer"]["resourcesPerNodes"] = {}
    with pytest.raises(ValueError, match=r"spec\.trainer\.resourcesPerNodes"):
        trainjob.check_fields(body)


def test_needs_a_shared_store(params: Params, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shared store"):
        trainjob.job_files("", "run-1", STRATEGY, tmp_path / "line.parquet")
    with pytest.raises(ValueError, match="Pipeline Run Workspace"):
        trainjob.default_placement(params.kfp)  # store: workspace, no claim known


# --------------------------------------------------------------------------- create + wait


class Jobs:
    """``CustomObjectsApi`` stand-in: records calls; each read of the job moves it through
    ``statuses`` (the last one stays); ``on_complete`` runs when it first reads Complete."""

    def __init__(
        self,
        statuses: list[dict[str, Any]],
        on_complete: Callable[[dict[str, Any]], None] | None = None,
        existing: dict[str, Any] | None = None,
    ) -> None:
        self.statuses, self.on_complete, self.existing = list(statuses), on_complete, existing
        self.calls: list[tuple[str, ...]] = []
        self.body: dict[str, Any] | None = None
        self.deleted = False

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("create", group, version, namespace, plural, body["metadata"]["name"]))
        if self.existing is not None and not self.deleted:
            raise ApiException(status=409, reason="Conflict")
        self.body = body
        return body

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        self.calls.append(("get", group, version, namespace, plural, name))
        if self.deleted and self.body is None:
            raise ApiException(status=404, reason="Not Found")
        if self.body is None:
            assert self.existing is not None
            return self.existing
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if trainjob.phase({"status": status}) == COMPLETE and self.on_complete:
            self.on_complete(self.body)
            self.on_complete = None
        return {**self.body, "status": status}

    def delete_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        propagation_policy: str = "",
    ) -> None:
        self.calls.append(("delete", group, version, namespace, plural, name))
        self.deleted = True


class Pods:
    """``CoreV1Api`` stand-in: the two nodes of a job, node 1 failed."""

    def __init__(self) -> None:
        self.log_calls: list[dict[str, Any]] = []

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        assert "jobset.sigs.k8s.io/jobset-name=" in label_selector
        return SimpleNamespace(
            items=[
                SimpleNamespace(
                    metadata=SimpleNamespace(
                        name=f"job-node-0-{i}",
                        labels={"batch.kubernetes.io/job-completion-index": str(i)},
                    ),
                    status=SimpleNamespace(phase=phase),
                )
                for i, phase in ((0, "Running"), (1, "Failed"))
            ]
        )

    def read_namespaced_pod_log(self, **kwargs: Any) -> str:
        self.log_calls.append(kwargs)
        return "epoch 1/16\nTraceback (most recent call last):\nRuntimeError: NCCL error\n"


def _client(jobs: Jobs) -> TrainJobClient:
    return TrainJobClient(jobs, Pods(), "team-a")


def test_create_and_wait(params: Params, tmp_path: Path) -> None:
    jobs = Jobs([{}, ST_CREATED, ST_RUNNING, ST_RUNNING, ST_COMPLETE])
    logged: list[str] = []
    sleeps: list[float] = []
    body = _body(params, tmp_path)
    job = trainjob.run(
        _client(jobs), body, timeout_s=600, poll_s=5, log=logged.append, sleep=sleeps.append
    )
    assert trainjob.phase(job) == COMPLETE
    name = body["metadata"]["name"]
    ref = ("trainer.kubeflow.org", "v1alpha1", "team-a", "trainjobs", name)
    assert jobs.calls[0] == ("create", *ref) and jobs.body == body
    assert all(call[1:] == ref for call in jobs.calls)
    phases = [line.rsplit(": ", 1)[1] for line in logged[1:]]
    assert phases == [CREATED, RUNNING, COMPLETE]  # each change logged once
    assert sleeps == [5, 5, 5, 5]


def test_failed_job_is_a_clear_error(params: Params, tmp_path: Path) -> None:
    jobs = Jobs([ST_CREATED, ST_RUNNING, ST_FAILED])
    client = _client(jobs)
    with pytest.raises(TrainJobError) as info:
        trainjob.run(
            client, _body(params, tmp_path), 600, 1, log=lambda _: None, sleep=lambda _: None
        )
    message = str(info.value)
    name = trainjob.job_name("run-1", STRATEGY)
    assert f"TrainJob team-a/{name} failed" in message
    assert "Failed=True (FailedJobs): jobset failed: job node-1 BackoffLimitExceeded" in message
    # the failed node's last log lines, from its `node` container
    assert "[job-node-0-1] RuntimeError: NCCL error" in message
    (call,) = client.core.log_calls
    assert call["name"] == "job-node-0-1" and call["container"] == "node"
    assert f"kubectl describe trainjob {name} -n team-a" in message
    assert not isinstance(info.value, TrainJobTimeout)


def test_timeout_deletes_the_job(params: Params, tmp_path: Path) -> None:
    jobs = Jobs([ST_RUNNING])
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(TrainJobTimeout, match=r"not complete after 60s \(Running\)"):
        trainjob.run(
            _client(jobs),
            _body(params, tmp_path),
            60,
            10,
            log=lambda _: None,
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert jobs.calls[-1][0] == "delete"


def test_transient_api_errors_are_retried(params: Params, tmp_path: Path) -> None:
    jobs = Jobs([ST_COMPLETE])
    client = _client(jobs)
    real_get = jobs.get_namespaced_custom_object
    failures = [ApiException(status=503, reason="Service Unavailable")] * 2

    def flaky(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return real_get(*args, **kwargs)

    jobs.get_namespaced_custom_object = flaky  # type: ignore[method-assign]
    logged: list[str] = []
    job = trainjob.run(
        client, _body(params, tmp_path), 60, 1, log=logged.append, sleep=lambda _: None
    )
    assert trainjob.phase(job) == COMPLETE
    assert sum("HTTP 503" in line for line in logged) == 2


def test_retried_task_finds_its_job_again(params: Params, tmp_path: Path) -> None:
    """A retried KFP task creates the same name: a running job is waited on, not duplicated;
    a failed one is replaced (the new one resumes from the checkpoint)."""
    body = _body(params, tmp_path)
    running = Jobs([ST_COMPLETE], existing={**body, "status": ST_RUNNING})
    client = _client(running)
    found = client.create(body, log=lambda _: None)
    assert trainjob.phase(found) == RUNNING
    assert [c[0] for c in running.calls] == ["create", "get"]

    failed = Jobs([ST_COMPLETE], existing={**body, "status": ST_FAILED})
    logged: list[str] = []
    _client(failed).create(body, log=logged.append, sleep=lambda _: None)
    assert [c[0] for c in failed.calls] == ["create", "get", "delete", "get", "create"]
    assert failed.body == body and "failed: replacing it" in logged[0]


def test_create_error_names_the_job(params: Params, tmp_path: Path) -> None:
    class Forbidden(Jobs):
        def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise ApiException(status=403, reason="Forbidden")

    body = _body(params, tmp_path)
    with pytest.raises(TrainJobError, match=r"could not be created: HTTP 403 Forbidden"):
        _client(Forbidden([{}])).create(body, log=lambda _: None)


# --------------------------------------------------------------------------- the component


def test_component_end_to_end(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The component body against the recorder: inputs laid out in the store, one TrainJob
    created with the task's settings, the model the job wrote published with its metadata."""
    for var in ("MENTORING_PIPELINE_RUN", "MENTORING_GIT_COMMIT"):  # the body sets them
        monkeypatch.setenv(var, "")
    store = tmp_path / "store"
    data = store / "run-1" / "data"
    (data / "manifests").mkdir(parents=True)
    (data / "manifests" / "line.parquet").write_bytes(b"PAR1")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "partial_labels.npz").write_bytes(b"labels")
    (tmp_path / "deployed.pt").write_bytes(b"baseline weights")

    def job_writes_its_outputs(body: dict[str, Any]) -> None:
        args = body["spec"]["trainer"]["args"]
        staged = Path(args[args.index("--params") + 1])
        assert yaml.safe_load(staged.read_text()) == adapter.pipeline_value(params)
        labels = Path(args[args.index("--labels") + 1])
        assert labels.read_bytes() == b"labels"
        assert Path(args[args.index("--baseline") + 1]).read_bytes() == b"baseline weights"
        assert args[args.index("--manifest") + 1] == str(data / "manifests" / "line.parquet")
        Path(args[args.index("--model") + 1]).write_bytes(b"trained weights")
        results = Path(args[args.index("--results") + 1])
        (results / "metrics.json").write_text(
            json.dumps({"strategy": STRATEGY, "epochs": 16, "final_loss": 0.25})
        )
        (results / "mlflow.json").write_text(json.dumps({"run_id": "r1", "fingerprint": "f0"}))

    jobs = Jobs([ST_CREATED, ST_RUNNING, ST_COMPLETE], on_complete=job_writes_its_outputs)
    monkeypatch.setattr(
        trainjob.TrainJobClient, "from_cluster", classmethod(lambda cls: _client(jobs))
    )
    monkeypatch.setattr(trainjob, "POLL_S", 0.0)
    model = dsl.Model(uri=str(tmp_path / "out" / "model"))
    metrics = dsl.Metrics(uri=str(tmp_path / "out" / "metrics"))
    task_config = dsl.TaskConfig(
        resources={"limits": {"nvidia.com/gpu": "2", "cpu": "8"}, "requests": {"cpu": "4"}},
        node_selector={"pool": "gpu"},
        volumes=[
            {"name": "kfp-workspace", "persistentVolumeClaim": {"claimName": "wf-kfp-workspace"}}
        ],
        volume_mounts=[{"name": "kfp-workspace", "mountPath": str(store)}],
    )
    train_distributed.python_func(
        params=adapter.pipeline_value(params),
        strategy=STRATEGY,
        line=dsl.Dataset(uri=str(tmp_path / "line"), metadata={"store": str(data)}),
        labels=dsl.Artifact(uri=str(tmp_path / "labels")),
        deployed=dsl.Model(uri=str(tmp_path / "deployed.pt")),
        model=model,
        metrics=metrics,
        task_config=task_config,
        store_dir=str(store),
        kfp_run_id="run-1",
        git_commit="c" * 40,
        num_nodes=3,
    )
    assert Path(model.path).read_bytes() == b"trained weights"
    assert model.metadata["name"] == STRATEGY and model.metadata["mlflow"]["run_id"] == "r1"
    assert model.metadata["fingerprint"] == "f0" and model.metadata["bytes"] == 15
    assert metrics.metadata == {"final_loss": 0.25}
    assert jobs.body is not None
    trainer = jobs.body["spec"]["trainer"]
    assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
    assert _node_pod(jobs.body)["nodeSelector"] == {"pool": "gpu"}
    assert os.environ.get("MENTORING_PIPELINE_RUN") == "run-1"


def test_component_without_the_model_is_an_error(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "labels.npz").write_bytes(b"l")
    (tmp_path / "deployed.pt").write_bytes(b"b")
    jobs = Jobs([ST_COMPLETE])  # complete, but the nodes wrote elsewhere
    with pytest.raises(TrainJobError, match="same store"):
        trainjob.train_on_cluster(
            params,
            STRATEGY,
            manifest=tmp_path / "line.parquet",
            labels=tmp_path / "labels.npz",
            baseline=tmp_path / "deployed.pt",
            store_dir=str(tmp_path / "store"),
            task_config={"volumes": [{"name": "s", "emptyDir": {}}]},
            client=_client(jobs),
            poll_s=0,
            log=lambda _: None,
        )


def _tiny_pipeline(params: Params) -> Any:
    cfg = params.kfp

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def inputs(
        line: dsl.Output[dsl.Dataset],
        labels: dsl.Output[dsl.Artifact],
        deployed: dsl.Output[dsl.Model],
    ) -> None:
        pass

    @dsl.pipeline(name="trainjob-test", pipeline_config=platform.pipeline_config(cfg))
    def tiny(params: dict = adapter.pipeline_value(params)) -> None:
        made = inputs()
        platform.configure(
            train_distributed(
                params=params,
                strategy=STRATEGY,
                line=made.outputs["line"],
                labels=made.outputs["labels"],
                deployed=made.outputs["deployed"],
                store_dir=platform.store_dir(cfg),
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "train",  # the settings of a training task (GPU nodes, resources, secrets)
            cfg,
        )

    return tiny


@pytest.mark.parametrize(
    "overrides",
    [{}, {"kfp.store": "pvc", "kfp.s3_endpoint": "http://minio.test:9000"}],
    ids=["workspace", "pvc"],
)
def test_component_compiles_with_its_passthroughs(
    overrides: dict[str, Any], tmp_path: Path
) -> None:
    params = load_params(REPO / "params.yaml", overrides)
    cfg = params.kfp
    path = tmp_path / "tiny.yaml"
    compiler.Compiler().compile(_tiny_pipeline(params), str(path))
    spec, k8s = yaml.safe_load_all(path.read_text())
    component = spec["components"]["comp-train-distributed"]
    assert component["taskConfigPassthroughs"] == [
        {"field": "RESOURCES"},
        {"field": "KUBERNETES_NODE_SELECTOR"},
        {"field": "KUBERNETES_TOLERATIONS"},
        {"field": "KUBERNETES_AFFINITY"},
        {"field": "ENV", "applyToTask": True},
        {"field": "KUBERNETES_VOLUMES", "applyToTask": True},
    ]
    inputs = component["inputDefinitions"]["parameters"]
    assert inputs["task_config"]["parameterType"] == "TASK_CONFIG"
    assert inputs["runtime"]["defaultValue"] == "torch-distributed"
    container = spec["deploymentSpec"]["executors"]["exec-train-distributed"]["container"]
    assert container["image"] == cfg.gpu_image and "pip install" not in str(container["command"])
    assert container["resources"]["accelerator"]["resourceType"] == cfg.gpu.resource
    # the settings the TaskConfig will carry to the nodes
    executor = k8s["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    task = executor["exec-train-distributed"]
    assert task["nodeSelector"]["labels"] == cfg.gpu.node_selector
    assert task["tolerations"][0]["key"] == cfg.gpu.toleration_key
    assert {s["secretName"] for s in task["secretAsEnv"]} == {cfg.mlflow_secret, cfg.s3_secret}
    if cfg.store == "pvc":
        assert task["pvcMount"][0]["mountPath"] == cfg.pvc_mount
        assert {"name": "AWS_ENDPOINT_URL", "value": cfg.s3_endpoint} in container["env"]
    # and what the component falls back on without a TaskConfig is the same
    placement = trainjob.default_placement(cfg, "claim")
    assert placement.node_selector == task["nodeSelector"]["labels"]
    assert [t["key"] for t in placement.tolerations] == [t["key"] for t in task["tolerations"]]
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"], e["name"])
        for e in placement.env
        if "valueFrom" in e
    }
    assert refs == {
        (s["secretName"], k["secretKey"], k["envVar"])
        for s in task["secretAsEnv"]
        for k in s["keyToEnv"]
    }


# --------------------------------------------------------------------------- the example


def test_committed_example_is_current(params: Params) -> None:
    assert EXAMPLE.exists(), f"{EXAMPLE} missing: python -m mentoring.orchestration.trainjob"
    assert EXAMPLE.read_text() == trainjob.example_manifest(params), (
        f"{EXAMPLE} is out of date with params.yaml / trainjob.py: run `python -m "
        f"mentoring.orchestration.trainjob --out {EXAMPLE.relative_to(REPO)}` and commit it"
    )
    body = next(yaml.safe_load_all(EXAMPLE.read_text()))
    trainjob.check_fields(body)
    assert body["spec"]["trainer"]["numNodes"] == 2
    assert body["spec"]["trainer"]["args"][3] == STRATEGY
