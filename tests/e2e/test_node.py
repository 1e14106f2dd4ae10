"""The one-node cluster itself: real pods run the project's images, reach Services by DNS name,
write to the shared volume as uid 1000, and nothing of the cluster is routed off this machine."""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes import client

from tests.fixtures.cluster import wait_for
from tests.fixtures.node import NODE_NAME
from tests.fixtures.node_host import (
    KEEP_LOCAL_CHAIN,
    NODE_BRIDGE,
    NODE_IP,
    POD_BRIDGE,
    POD_CIDR,
    route_device,
    run,
)

LOCAL_DEVICES = {"lo", NODE_BRIDGE, POD_BRIDGE}


@pytest.fixture(scope="module")
def api(node_cluster):
    with node_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(api):
    name = f"node-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(api).delete_namespace(name)


def pod(name: str, image: str, script: str, claim: str | None = None) -> dict:
    volumes, mounts = [{"name": "tmp", "emptyDir": {}}], [{"name": "tmp", "mountPath": "/tmp"}]
    if claim:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "data", "mountPath": "/data"})
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never", "command": ["python", "-c", script],
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"nvidia.com/gpu": "1"}},
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    }


def finished(api, namespace: str, name: str):
    return wait_for(f"pod {name} to finish", lambda: client.CoreV1Api(api).read_namespaced_pod(name, namespace),
                    lambda p: p.status.phase in ("Succeeded", "Failed"), timeout=120)


def test_cluster_traffic_stays_on_this_machine(node_cluster, api, namespace):
    # a running pod first: the pod bridge and its routes exist from the first sandbox on
    sandbox = pod("sandbox", node_cluster.images["pause"], "")
    sandbox["spec"]["containers"][0].pop("command")
    client.CoreV1Api(api).create_namespaced_pod(namespace, sandbox)
    wait_for("the pod to run", lambda: client.CoreV1Api(api).read_namespaced_pod("sandbox", namespace),
             lambda p: p.status.phase == "Running", timeout=60)
    node = client.CoreV1Api(api).read_node(NODE_NAME)
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == NODE_IP
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=kubernetes")
    endpoints = {address for s in slices.items for e in s.endpoints for address in e.addresses}
    assert endpoints == {NODE_IP}  # the API server advertises the node bridge's address, not the gateway
    for address in (NODE_IP, "10.244.0.1", "10.244.0.77", "10.96.0.1", "10.96.200.3"):
        assert route_device(address) in LOCAL_DEVICES, address
    # forwarded pod traffic may only reach other pods: anything else is dropped, and nothing masquerades
    forward = run("iptables", "-S", KEEP_LOCAL_CHAIN)
    assert f"-A {KEEP_LOCAL_CHAIN} -s {POD_CIDR} -j DROP" in forward
    rules = run("iptables", "-S", "FORWARD").splitlines()[1:]
    before = rules[:rules.index(f"-A FORWARD -j {KEEP_LOCAL_CHAIN}")]
    assert all("-j KUBE-" in rule for rule in before), before  # only kube-proxy's (service) chains come first
    nat = run("iptables", "-t", "nat", "-S", "POSTROUTING")
    assert POD_CIDR not in nat and "CNI-" not in nat


def test_a_pod_runs_reaches_the_api_by_dns_and_writes_the_volume(node_cluster, api, namespace):
    core = client.CoreV1Api(api)
    folder = node_cluster.claim(api, namespace, "data")
    script = (
        "import socket, os, json, urllib.request, ssl\n"
        "address = socket.gethostbyname('kubernetes.default.svc.cluster.local')\n"
        "context = ssl.create_default_context(cafile='/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
        "reply = urllib.request.urlopen('https://kubernetes.default.svc/version', context=context, timeout=10)\n"
        "status = [reply.status, json.load(reply)['gitVersion']]\n"
        f"name = '/data/{namespace}.json'\n"
        "open(name, 'w').write(json.dumps({'uid': os.getuid(), 'address': address, 'status': status}))\n"
        "print('wrote', name, flush=True)\n"
    )
    core.create_namespaced_pod(namespace, pod("probe", node_cluster.images["operator"], script, claim="data"))
    done = finished(api, namespace, "probe")
    logs = core.read_namespaced_pod_log("probe", namespace)
    assert done.status.phase == "Succeeded", logs
    assert logs.strip() == f"wrote /data/{namespace}.json"
    claim = core.read_namespaced_persistent_volume_claim("data", namespace)
    volume = core.read_persistent_volume(claim.spec.volume_name)
    written = json.loads((folder / f"{namespace}.json").read_text())
    assert volume.spec.host_path.path == str(folder) and claim.status.phase == "Bound"
    # CoreDNS named the Service, kube-proxy took its IP to the API server (/version is public)
    assert written == {"uid": 1000, "address": "10.96.0.1", "status": [200, "v1.36.3"]}


def test_the_node_offers_gpus_and_pods_can_request_them(node_cluster, api):
    node = client.CoreV1Api(api).read_node(NODE_NAME)
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
