"""NegRL operator: the NegRLExperiment API, planning, manifests, the kopf shell and the local runner.

Importing this package must stay light (no kopf, no torch): the CLI and the stage configs live here.
"""
