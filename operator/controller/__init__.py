"""The kopf shell around the reconcile core: watches, server-side apply of a plan, status patches,
Events, leader and liveness endpoints and the operator's Prometheus metrics (`negrl operator`).

Imports: anything (kopf, kubernetes); it is the only package that talks to the API server.
"""
