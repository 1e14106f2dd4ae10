"""The Helm chart: lint, rendering with each toggle, least-privilege RBAC, the schema of values,
and the dashboards (every metric a panel or alert queries is exported by some code)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from negrl_operator.controller.metrics import OperatorMetrics

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "negrl"
HELM = REPO / ".tools" / "bin" / "helm"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {proc.stderr}")
    return proc


def render(*sets: str) -> list[dict]:
    args = ["template", "rel", str(CHART), "--namespace", "negrl-system"]
    for item in sets:
        args += ["--set", item]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_lint_strict():
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART)).stdout


def test_defaults_render_the_operator_and_no_monitoring_objects():
    docs = render()
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Role", "RoleBinding", "Service",
                     "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"  # a standby takes over the Lease
    env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert (env["NEGRL_LEADER_ELECT"], env["NEGRL_LEASE_NAME"], env["NEGRL_LEASE_DURATION"]) == ("true", "rel-negrl", "15")
    (lease_role,) = by_kind(docs, "Role")
    assert (lease_role["metadata"]["namespace"], lease_role["rules"][0]["resources"]) == ("negrl-system", ["leases"])
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["negrl", "operator"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["serviceAccountName"] == "rel-negrl" and pod["securityContext"]["runAsNonRoot"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (service,) = by_kind(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_monitoring_toggles():
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true",
                  "metrics.prometheusRule.enabled=true")
    assert [len(by_kind(docs, k)) for k in ("ServiceMonitor", "PodMonitor", "PrometheusRule")] == [1, 1, 1]
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    ports = [endpoint["port"] for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]]
    assert ports == ["http", "metrics"]
    http, metrics = pod_monitor["spec"]["podMetricsEndpoints"]
    assert http["honorLabels"] is metrics["honorLabels"] is False  # the pod's stage label wins
    (drop,) = [r for r in metrics["relabelings"] if r.get("action") == "drop"]
    assert drop["regex"] == "trainer;[1-9][0-9]*"  # every training pod serves the same figures: one is scraped
    assert drop["sourceLabels"][1] == "__meta_kubernetes_pod_annotation_batch_kubernetes_io_job_completion_index"
    assert not [r for r in http["relabelings"] if r.get("action") == "drop"]
    assert not by_kind(render("grafana.dashboards.enabled=false"), "ConfigMap")


OPERATOR_NEEDS = {
    ("negrl.io", "negrlexperiments"): {"get", "list", "watch", "patch"},
    ("negrl.io", "negrlexperiments/status"): {"patch"},
    ("batch", "jobs"): {"list", "watch", "create", "patch", "delete"},
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create"},
    ("", "persistentvolumeclaims"): {"get"},
}


def granted(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    result: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                result.setdefault((group, resource), set()).update(rule["verbs"])
    return result


def test_rbac_grants_what_the_operator_uses_and_nothing_broad():
    docs = render("rbac.aggregateToDefaultRoles=false")
    (role,) = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "rel-negrl"]
    rules = granted(role["rules"])
    for key, verbs in OPERATOR_NEEDS.items():
        assert verbs <= rules.get(key, set()), key
    for rule in [rule for r in by_kind(docs, "ClusterRole") for rule in r["rules"]]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert "secrets" not in rule["resources"]
        assert not {"update", "create", "delete"} & set(rule["verbs"]) or rule["resources"] != ["pods"]
    assert rules[("", "persistentvolumeclaims")] == {"get"}  # read one named claim; never write, list or watch


def test_single_replica_without_leader_election_is_recreated():
    spec = by_kind(render("operator.replicas=1", "operator.leaderElection.enabled=false"), "Deployment")[0]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert "NEGRL_LEADER_ELECT" not in {e["name"] for e in spec["template"]["spec"]["containers"][0]["env"]}


def test_cluster_wide_writes_are_limited_to_managed_objects_by_an_admission_policy():
    (policy,) = by_kind(render(), "ValidatingAdmissionPolicy")
    (binding,) = by_kind(render(), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        'request.userInfo.username == "system:serviceaccount:negrl-system:rel-negrl"')
    assert {r for rule in policy["spec"]["matchConstraints"]["resourceRules"] for r in rule["resources"]} == {
        "configmaps", "services", "jobs", "deployments"}
    assert not by_kind(render("rbac.restrictWrites=false"), "ValidatingAdmissionPolicy")
    assert not by_kind(render("operator.watchNamespaces={ml-a}"), "ValidatingAdmissionPolicy")  # Roles suffice


def test_watch_namespaces_use_roles():
    docs = render("operator.watchNamespaces={ml-a,ml-b}")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["ml-a", "ml-b", "negrl-system"]
    assert [r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")] == [
        "rel-negrl-view", "rel-negrl-edit", "rel-negrl-discovery"]
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml-a" in args and "--namespace=ml-b" in args


def test_user_roles_aggregate_into_view_and_edit():
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    assert roles["rel-negrl-view"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert roles["rel-negrl-edit"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "create" in roles["rel-negrl-edit"]["rules"][0]["verbs"]


@pytest.mark.parametrize("bad", ["operator.workers=0", "metrics.port=0", "image.pullPolicy=Sometimes",
                                 "unknownKey=1", "operator.watchNamespaces={Bad_NS}"])
def test_values_schema_rejects(bad):
    assert helm("template", "rel", str(CHART), "--set", bad, check=False).returncode != 0


def test_chart_ships_the_generated_crd():
    assert (CHART / "crds" / "negrl.io_negrlexperiments.yaml").read_text() == (
        REPO / "crds" / "negrl.io_negrlexperiments.yaml").read_text()


def test_dashboards_are_configmaps_for_the_grafana_sidecar():
    maps = by_kind(render(), "ConfigMap")
    assert sorted(m["metadata"]["name"] for m in maps) == [f"rel-negrl-dashboard-{p.stem}" for p in DASHBOARDS]
    assert [p.stem for p in DASHBOARDS] == ["overview", "rollout", "trainer", "vllm"]
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        (content,) = config_map["data"].values()
        board = json.loads(content)
        assert board["uid"].startswith("negrl-") and board["panels"]


def queried_metrics(expressions: list[str]) -> set[str]:
    names = set()
    for expr in expressions:
        for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
            if token.startswith(("negrl_", "vllm:")):
                names.add(token)
    return names


def dashboard_expressions() -> list[str]:
    exprs = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    rule = helm("template", "rel", str(CHART), "--set", "metrics.prometheusRule.enabled=true",
                "-s", "templates/prometheusrule.yaml").stdout
    exprs += [r["expr"] for g in yaml.safe_load(rule)["spec"]["groups"] for r in g["rules"]]
    return exprs


def exported_by_code() -> str:
    """Source that registers metrics: ours (sampler/, trainer/, operator/) and the installed vLLM."""
    texts = [p.read_text() for folder in ("sampler", "trainer", "operator") for p in (REPO / folder).rglob("*.py")]
    vllm = Path(importlib.util.find_spec("vllm").origin).parent
    texts += [p.read_text() for p in (vllm / "v1" / "metrics").glob("*.py")]
    return "\n".join(texts)


def base_names(name: str) -> list[str]:
    """A series name and the names a client library may have registered it under."""
    candidates = [name]
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix):
            candidates.append(name.removesuffix(suffix))
    return candidates


def test_every_metric_a_dashboard_or_alert_queries_exists_in_the_code():
    code = exported_by_code()
    operator = {metric.name for metric in OperatorMetrics().registry.collect()}
    missing = []
    for name in sorted(queried_metrics(dashboard_expressions())):
        if name.startswith("negrl_operator_"):
            found = any(candidate in operator for candidate in base_names(name))
        else:
            found = any(f'"{candidate}"' in code for candidate in base_names(name))
        if not found:
            missing.append(name)
    assert not missing, f"queried but exported by no code: {missing}"
    assert len(queried_metrics(dashboard_expressions())) > 30
