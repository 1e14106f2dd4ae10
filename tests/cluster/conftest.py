"""Fixtures every cluster module shares, defined beside the operator tests: the chart installed with
helm, a kubeconfig with its ServiceAccount's token, the operator process, a namespace with storage."""

from tests.cluster.test_operator import api, chart, namespace, operator, operator_kubeconfig  # noqa: F401
