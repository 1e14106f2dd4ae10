"""The artifact clean-up Job of a deleted experiment whose `storage.onDelete` is Delete (pure).

Retain (the default) keeps every artifact. Delete removes only the deleted experiment's own folder,
`<mountPath>/<path>/<namespace>/<name>/<uid>` (the uid keeps a re-created experiment of the same
name safe), with a Job that has no owner (its owner is gone) and cleans itself up after 10 minutes.
"""

from __future__ import annotations

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.reconcile.graph import storage_root
from negrl_operator.reconcile.manifest import (
    RESTRICTED_CONTAINER,
    STORAGE_VOLUME,
    Owner,
    child_name,
    labels,
    restricted_pod,
    storage_volume,
)

TTL_S = 600


def cleanup_job(owner: Owner, spec: ExperimentSpec) -> dict | None:
    """The Job that deletes the experiment's artifact folder, or None when the policy retains it."""
    if spec.storage.on_delete != "Delete":
        return None
    root = storage_root(spec, owner.namespace, owner.name, owner.uid)
    job_labels = labels(owner, "cleanup")
    container = {
        "name": "cleanup", "image": spec.worker.image, "command": ["rm", "-rf", "--", root],
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": STORAGE_VOLUME, "mountPath": spec.storage.mount_path}],
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": child_name(owner.name, "cleanup", owner.uid[:8]), "namespace": owner.namespace,
                     "labels": job_labels},
        "spec": {
            "backoffLimit": 3, "ttlSecondsAfterFinished": TTL_S,
            "template": {"metadata": {"labels": job_labels}, "spec": {
                "restartPolicy": "Never", "containers": [container], "volumes": [storage_volume(spec)],
                "securityContext": restricted_pod(spec.worker.run_as_user)}},
        },
    }
