"""The operator's pure core: the stage graph, `plan()` (observed children + status -> desired
children, deletions, new status, requeue), the child manifests (Jobs, sampler Deployments and
Services), reading observed objects and Job summaries, results and conditions.

Imports: `negrl_operator.api` and the standard library only. No kopf, kubernetes, HTTP or processes:
every function takes plain values (dicts of Kubernetes objects) and returns plain values.
"""
