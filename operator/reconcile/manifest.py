"""Pure builders of an experiment's children: metadata, stage ConfigMaps, stage and training Jobs.

Names follow `<experiment>-<component>[-<stage>]`, cut with a hash suffix so that pod names derived
from them stay within 63 characters. Every child carries the standard labels, a controller owner
reference (deleting the experiment deletes it) and a hash of its own content (the plan re-applies
only what changed). The sampler Deployment and Service are in `serving.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from negrl_operator.api.exit_code import CONFIG_ERROR
from negrl_operator.api.experiment import API_VERSION, KIND, ExperimentSpec, SchedulingSpec
from negrl_operator.api.stage_config import STAGE_CONFIG_PATH, StageBase
from negrl_operator.reconcile.graph import StageNode
from negrl_operator.reconcile.observation import (
    HASH_ANNOTATION,
    INDEX_ANNOTATION,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    POLICY_LABEL,
    QUEUE_LABEL,
    STAGE_LABEL,
)

MAX_NAME = 52  # leaves room for the "-<index>-<random>" suffixes of pod names
COMPONENT = {"prepare": "data", "synthesize": "rollout", "train": "trainer", "sample": "rollout",
             "credit": "rollout", "pairs": "rollout", "evaluate": "eval"}
SHARDED_KINDS = ("synthesize", "sample", "credit")
METRICS_PORT = 9090
MASTER_PORT = 29500
STORAGE_VOLUME, CONFIG_VOLUME = "storage", "stage-config"
# The stage spec whose activeDeadlineSeconds applies to each role (data-only roles have none).
DEADLINE_OF = {"sft": "sft", "rft": "rft", "step-dpo": "step_dpo", "outcome-dpo": "outcome_dpo",
               "sample": "sampling", "credit": "credit", "eval": "eval"}


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


def child_name(owner: str, *parts: str) -> str:
    raw = "-".join([owner, *parts])
    if len(raw) <= MAX_NAME:
        return raw
    return f"{raw[:MAX_NAME - 9].rstrip('-')}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"


def job_name(owner: str, node: StageNode) -> str:
    component = COMPONENT[node.kind]
    stage = node.name.removeprefix(f"{component}-") if node.kind == "evaluate" else node.name
    return child_name(owner, component, stage)


def config_map_name(owner: str, node: StageNode) -> str:
    return child_name(owner, "config", node.name)


def labels(owner: Owner, component: str, stage: str | None = None, policy: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "negrl", INSTANCE_LABEL: owner.name,
        "app.kubernetes.io/component": component, MANAGED_BY_LABEL: MANAGER,
    }
    if stage:
        result[STAGE_LABEL] = stage
    if policy:
        result[POLICY_LABEL] = policy
    return result


def metadata(owner: Owner, name: str, child_labels: dict[str, str]) -> dict:
    return {
        "name": name, "namespace": owner.namespace, "labels": dict(child_labels),
        "ownerReferences": [{
            "apiVersion": API_VERSION, "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": True, "blockOwnerDeletion": True,
        }],
    }


def content_hash(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(manifest: dict) -> dict:
    """The manifest with `negrl.io/spec-hash` set to the hash of everything else in it."""
    meta = manifest["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    bare = {**manifest, "metadata": {**meta, "annotations": annotations}}
    stamped = {**annotations, HASH_ANNOTATION: content_hash(bare)}
    return {**manifest, "metadata": {**meta, "annotations": stamped}}


def config_map(owner: Owner, node: StageNode, config: StageBase) -> dict:
    return with_hash({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": metadata(owner, config_map_name(owner.name, node), labels(owner, COMPONENT[node.kind], node.name)),
        "data": {"stage.json": config.model_dump_json(indent=2) + "\n"},
    })


def scheduling(spec: SchedulingSpec) -> dict:
    pod: dict = {}
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    return pod


def queue_labels(spec: SchedulingSpec) -> dict[str, str]:
    return {QUEUE_LABEL: spec.queue_name} if spec.queue_name else {}


def resources(block, gpus: int = 0) -> dict:
    requests = {k: str(v) for k, v in block.requests.items()}
    limits = {k: str(v) for k, v in block.limits.items()}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def common_env(spec: ExperimentSpec) -> list[dict]:
    cache = "/".join([spec.storage.mount_path.rstrip("/"), spec.storage.path.strip("/"), ".cache", "huggingface"])
    env = [{"name": "HF_HOME", "value": cache.replace("//", "/")}]
    if spec.model.token_secret:
        ref = spec.model.token_secret
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


MLFLOW_SECRET_ENV = {"token": "MLFLOW_TRACKING_TOKEN", "username": "MLFLOW_TRACKING_USERNAME",
                     "password": "MLFLOW_TRACKING_PASSWORD"}


def tracking_env(spec: ExperimentSpec) -> list[dict]:
    """MLflow credentials of the stage pods, read by the MLflow client from its own variables."""
    credentials = spec.tracking.mlflow_credentials
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            for field, env in MLFLOW_SECRET_ENV.items() if (ref := getattr(credentials, field)) is not None]


def teacher_env(spec: ExperimentSpec, node: StageNode) -> list[dict]:
    """The synthesize pods' API key of an endpoint teacher: the variable the stage reads (apiKeyEnv)
    set from the Secret by the kubelet, so the key never passes through the operator or a config."""
    endpoint = spec.teacher.endpoint if spec.teacher is not None and node.kind == "synthesize" else None
    if endpoint is None or endpoint.api_key_secret is None:
        return []
    ref = endpoint.api_key_secret
    return [{"name": endpoint.api_key_env, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def storage_volume(spec: ExperimentSpec) -> dict:
    return {"name": STORAGE_VOLUME, "persistentVolumeClaim": {"claimName": spec.storage.claim_name}}


def shm_volume(size: str) -> dict:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


# GPU containers: no privilege escalation, no capabilities, the runtime's seccomp profile; the root
# filesystem stays writable (CUDA, Triton and torch.compile write caches under $HOME).
GPU_CONTAINER = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_pod(user: int) -> dict:
    """Pod Security `restricted`: for every pod that needs no GPU driver. OnRootMismatch: the volume's
    ownership is changed only when its root is not already the group's, not on every pod start."""
    return {
        "runAsNonRoot": True, "runAsUser": user, "runAsGroup": user, "fsGroup": user,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_metadata(pod_labels: dict[str, str], spec: SchedulingSpec) -> dict:
    meta: dict = {"labels": dict(pod_labels)}
    if spec.pod_annotations:
        meta["annotations"] = dict(spec.pod_annotations)
    return meta


def pod_failure_policy(container: str) -> dict:
    """A drained, preempted or evicted pod (DisruptionTarget) is not a failure: it is recreated
    without spending the backoff limit. An invalid config (exit CONFIG_ERROR) fails the Job at once:
    no retry can fix it."""
    return {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In", "values": [CONFIG_ERROR]}},
    ]}


def active_deadline(spec: ExperimentSpec, node: StageNode) -> int | None:
    stage = DEADLINE_OF.get(node.role)
    return getattr(spec.stages, stage).active_deadline_seconds if stage else None


def _job(owner: Owner, spec: ExperimentSpec, node: StageNode, name: str, pod: dict, count: int, backoff: int,
         placement: SchedulingSpec, per_index: bool = False) -> dict:
    """An Indexed Job. `per_index`: each shard has its own backoff limit (one flaky shard does not
    spend the others' retries) and the Job fails as soon as one shard has spent its own."""
    pod_labels = labels(owner, COMPONENT[node.kind], node.name)
    limits = {"backoffLimitPerIndex": backoff, "maxFailedIndexes": 0} if per_index else {"backoffLimit": backoff}
    job_spec = {
        "completionMode": "Indexed", "completions": count, "parallelism": count, **limits,
        "podFailurePolicy": pod_failure_policy(pod["containers"][0]["name"]),
        "template": {"metadata": pod_metadata(pod_labels, placement),
                     "spec": {"restartPolicy": "Never", **pod, **scheduling(placement)}},
    }
    if (deadline := active_deadline(spec, node)) is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    if placement.queue_name:
        job_spec["suspend"] = True  # created suspended, as Kueue expects: Kueue unsuspends it on admission
    return with_hash({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata(owner, name, {**pod_labels, **queue_labels(placement)}), "spec": job_spec,
    })


def _index_env() -> dict:
    path = f"metadata.annotations['{INDEX_ANNOTATION}']"
    return {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": path}}}


def stage_job(owner: Owner, spec: ExperimentSpec, node: StageNode) -> dict:
    """An Indexed Job running `negrl <stage> --config ...` (sharded stages: one shard per index)."""
    shards = spec.worker.shards if node.kind in SHARDED_KINDS else 1
    args = ["negrl", node.kind, "--config", STAGE_CONFIG_PATH]
    if node.kind in SHARDED_KINDS:
        args += ["--shard", f"$(JOB_COMPLETION_INDEX)/{shards}"]
    container = {
        "name": "stage", "image": spec.worker.image, "command": args,
        "env": [_index_env(), {"name": "HOME", "value": "/tmp"}, *common_env(spec), *tracking_env(spec),
                *teacher_env(spec, node)],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": resources(spec.worker.resources), "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _mounts(spec) + [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "containers": [container], "securityContext": restricted_pod(spec.worker.run_as_user),
        "volumes": _volumes(spec, owner, node) + [{"name": "tmp", "emptyDir": {}}],
    }
    return _job(owner, spec, node, job_name(owner.name, node), pod, shards, stage_backoff(spec, node),
                spec.scheduling.worker, per_index=node.kind in SHARDED_KINDS)


def stage_backoff(spec: ExperimentSpec, node: StageNode) -> int:
    """Pod retries of a stage Job: worker.backoffLimit, except for the synthesize stage of an endpoint
    with a cap on requests or tokens: a retried pod would spend its cap again, so a failed pod fails
    the stage (spec.retry resumes it, keeping what it wrote)."""
    endpoint = spec.teacher.endpoint if spec.teacher is not None and node.kind == "synthesize" else None
    capped = endpoint is not None and (endpoint.max_requests is not None or endpoint.max_tokens_total is not None)
    return 0 if capped else spec.worker.backoff_limit


def _mounts(spec: ExperimentSpec) -> list[dict]:
    return [
        {"name": STORAGE_VOLUME, "mountPath": spec.storage.mount_path},
        {"name": CONFIG_VOLUME, "mountPath": STAGE_CONFIG_PATH.rsplit("/", 1)[0], "readOnly": True},
    ]


def _volumes(spec: ExperimentSpec, owner: Owner, node: StageNode) -> list[dict]:
    return [storage_volume(spec), {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(owner.name, node)}}]


def trainer_service_name(owner: str, node: StageNode) -> str:
    return child_name(owner, "trainer", node.name, "hl")


def torchrun_command(spec: ExperimentSpec, master: str, run_id: str) -> list[str]:
    """Single node: --standalone. Several: torchrun's c10d rendezvous hosted at pod 0's stable DNS
    name (no static node rank), with `maxRestarts` restarts of the worker group. After a lost pod
    every pod is new (JobSet, or the operator for a plain Job) and the workers resume from the last
    checkpoint."""
    nodes, procs = spec.trainer.nodes, max(1, spec.trainer.gpus_per_node)
    launch = ["torchrun", f"--nproc-per-node={procs}"]
    if nodes == 1:
        launch.append("--standalone")
    else:
        launch += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={master}:{MASTER_PORT}",
                   f"--rdzv-id={run_id}", f"--max-restarts={spec.trainer.max_restarts}"]
    return [*launch, "-m", "negrl_operator.cli", "train", "--config", STAGE_CONFIG_PATH]


def trainer_job(owner: Owner, spec: ExperimentSpec, node: StageNode) -> dict:
    """DeepSpeed through torchrun: one pod with N GPUs (trainer.backoffLimit pod retries), or an Indexed
    Job of `nodes` pods whose index 0 hosts the c10d rendezvous, reached through the headless Service
    (pod hostname + subdomain); a lost pod fails that Job and the operator restarts the group."""
    trainer, name = spec.trainer, job_name(owner.name, node)
    service = trainer_service_name(owner.name, node)
    master = f"{name}-0.{service}.{owner.namespace}.svc"
    container = {
        "name": "trainer", "image": trainer.image or spec.worker.image,
        "command": torchrun_command(spec, master, name),
        "env": [_index_env(), {"name": "HOME", "value": "/tmp"}, *common_env(spec), *tracking_env(spec)],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}, {"name": "rendezvous", "containerPort": MASTER_PORT}],
        "resources": resources(trainer.resources, trainer.gpus_per_node), "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _mounts(spec) + [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {  # the stage pods' restrictions: a read-only image, writes only to the volume, /tmp and /dev/shm
        "containers": [container], "securityContext": restricted_pod(spec.worker.run_as_user),
        "volumes": _volumes(spec, owner, node) + [shm_volume(trainer.shm_size), {"name": "tmp", "emptyDir": {}}],
    }
    if trainer.nodes == 1:
        return _job(owner, spec, node, name, pod, 1, trainer.backoff_limit, spec.scheduling.trainer)
    pod["subdomain"] = service
    # A replaced pod cannot rejoin the survivors' rendezvous (pytorch/pytorch#147064): no pod retries;
    # the operator restarts the whole group instead (plan.restarts_group), as JobSet does.
    return _job(owner, spec, node, name, pod, trainer.nodes, 0, spec.scheduling.trainer)


JOBSET_REPLICA = "node"  # the JobSet's one replicated Job: an Indexed Job of trainer.nodes pods


def jobset_master(owner: Owner, name: str) -> str:
    """Pod 0 of the JobSet's Job: JobSet names it <jobset>-<replicatedJob>-<job>-<pod> in the JobSet's
    own headless Service (network.enableDNSHostnames)."""
    return f"{name}-{JOBSET_REPLICA}-0-0.{name}.{owner.namespace}.svc"


def trainer_jobset(owner: Owner, spec: ExperimentSpec, node: StageNode) -> dict:
    """The training Job inside a JobSet: when a pod fails its Job fails (backoffLimit 0) and the
    JobSet recreates the whole group, up to trainer.maxRestarts times; a config error (the Job failed
    by its podFailurePolicy) fails the JobSet at once."""
    job = trainer_job(owner, spec, node)
    name = job["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    pod.pop("subdomain", None)  # JobSet sets hostname and subdomain itself
    pod["containers"][0]["command"] = torchrun_command(spec, jobset_master(owner, name), name)
    job_spec = {**job["spec"], "backoffLimit": 0}
    job_spec.pop("suspend", None)
    labels_ = {k: v for k, v in job["metadata"]["labels"].items() if k != QUEUE_LABEL}
    jobset_spec: dict = {  # defaults spelled out: they do not depend on JobSet's defaulting webhook
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
        "successPolicy": {"operator": "All"}, "startupPolicy": {"startupPolicyOrder": "AnyOrder"},
        "failurePolicy": {"maxRestarts": spec.trainer.max_restarts, "rules": [
            {"name": "config-error", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}]},
        "replicatedJobs": [{"name": JOBSET_REPLICA, "replicas": 1, "template": {
            "metadata": {"labels": labels_}, "spec": job_spec}}],
    }
    if spec.scheduling.trainer.queue_name:
        jobset_spec["suspend"] = True  # as for Jobs: Kueue admits and unsuspends it
    return with_hash({
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {**job["metadata"], "annotations": {}}, "spec": jobset_spec,
    })


def trainer_service(owner: Owner, node: StageNode) -> dict:
    """Headless Service giving each training pod a DNS name (multi-node only)."""
    selector = labels(owner, "trainer", node.name)
    return with_hash({
        "apiVersion": "v1", "kind": "Service",
        "metadata": metadata(owner, trainer_service_name(owner.name, node), selector),
        "spec": {
            "clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector,
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    })


def stage_children(owner: Owner, spec: ExperimentSpec, node: StageNode, config: StageBase) -> list[dict]:
    """What a started stage needs: its ConfigMap, its Job and (multi-node training) its Service."""
    if node.kind == "train" and spec.trainer.launcher == "JobSet":
        return [config_map(owner, node, config), trainer_jobset(owner, spec, node)]
    if node.kind == "train":
        extra = [trainer_service(owner, node)] if spec.trainer.nodes > 1 else []
        return [config_map(owner, node, config), *extra, trainer_job(owner, spec, node)]
    return [config_map(owner, node, config), stage_job(owner, spec, node)]
