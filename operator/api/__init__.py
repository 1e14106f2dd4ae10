"""The NegRLExperiment API and the contracts every component shares: the spec and status models
(one pydantic tree that also generates the CRD), the stage configs each Job validates, the artifact
layout on storage (atomic manifests, record shards) and the termination summary a Job reports.

Imports: pydantic, yaml and the standard library only; never kopf, kubernetes, HTTP clients, torch or
subprocess, since the operator image, every stage command and the tests all load it.
"""
