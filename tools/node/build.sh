#!/usr/bin/env bash
# Builds what a real test node runs besides Debian's containerd/runc: kubelet and kube-proxy from
# the control plane's Go module (tools/k8s, same Kubernetes version), CoreDNS with the plugins the
# node uses (tools/node/coredns, from the Go module proxy), and the pod sandbox's `pause` binary
# (tools/node/pause).
#
# The binaries go to ${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/node/<key>/bin/. <key> is the
# Kubernetes and CoreDNS versions plus a hash of tools/k8s/go.mod, go.sum, the pause source and
# this script. The control plane's own key (tools/k8s/build.sh) does not change: the node builds
# in a copy of its module, so adding node binaries never rebuilds the control plane.
#
#   tools/node/build.sh                  build if needed; the last line printed is the bin folder
#   tools/node/build.sh --print-bin-dir  print the bin folder for the current key, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
K8S=$HERE/../k8s
KUBE_VERSION=v1.36.3
COREDNS_VERSION=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$HERE/coredns/go.mod")
CACHE_ROOT=${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/node
KEY="$KUBE_VERSION-coredns-$COREDNS_VERSION-$(cat "$K8S/go.mod" "$K8S/go.sum" "$HERE/pause/main.go" "$HERE/coredns/main.go" \
  "$HERE/coredns/go.mod" "$HERE/coredns/go.sum" "$HERE/build.sh" | sha256sum | cut -c1-16)"
KEY_DIR=$CACHE_ROOT/$KEY
BIN_DIR=$KEY_DIR/bin
NAMES=(kubelet kube-proxy coredns pause)

fail() { printf 'tools/node/build.sh FAILED: %s\n' "$*" >&2; exit 1; }
all_built() {
  local name
  for name in "${NAMES[@]}"; do [ -x "$BIN_DIR/$name" ] || return 1; done
}

if [ "${1:-}" = "--print-bin-dir" ]; then echo "$BIN_DIR"; exit 0
elif [ $# -gt 0 ]; then fail "unknown argument '$1' (use no argument, or --print-bin-dir)"; fi
if all_built; then echo "node binaries are cached for $KEY"; echo "$BIN_DIR"; exit 0; fi

export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || fail "step 'find go': no 'go' on PATH or in /usr/local/go/bin (Go >= 1.26 is needed)"

# The same version stamps as the control plane (tools/k8s/build.sh): the kubelet reports them to
# the API server, and a v0.0.0 node fails version-skew checks.
kube_major=${KUBE_VERSION#v}; kube_major=${kube_major%%.*}
kube_minor=${KUBE_VERSION#v*.}; kube_minor=${kube_minor%%.*}
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$kube_major -X $pkg.gitMinor=$kube_minor"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false"
PARALLEL=${NEGRL_BUILD_PARALLEL:-2}

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then echo "another node build is running; waiting for it to finish"; flock 9; fi
if all_built; then echo "node binaries are cached for $KEY"; echo "$BIN_DIR"; exit 0; fi
if [ -d "$KEY_DIR" ]; then rm -rf "$KEY_DIR"; fi
rm -rf "$CACHE_ROOT"/.build-*
TMP_DIR=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
trap 'exit 130' INT TERM

echo "building the node binaries $KEY into $BIN_DIR"
start=$(date +%s)
mkdir -p "$TMP_DIR/bin" "$TMP_DIR/module"
# A copy of the control plane's module: -mod=mod may add go.sum lines for the kubelet's packages,
# and those must not touch tools/k8s (its files are the control plane's cache key).
cp "$K8S/go.mod" "$K8S/go.sum" "$TMP_DIR/module/"
printf 'package tools\n' > "$TMP_DIR/module/tools.go"
built() { printf '  built %-12s %4ss\n' "$1" "$(( $(date +%s) - $2 ))"; }
for target in kubelet=k8s.io/kubernetes/cmd/kubelet kube-proxy=k8s.io/kubernetes/cmd/kube-proxy; do
  name=${target%%=*}; t0=$(date +%s)
  (cd "$TMP_DIR/module" && go build -p "$PARALLEL" -ldflags "$LDFLAGS" -o "$TMP_DIR/bin/$name" "${target#*=}") \
    || fail "binary '$name': go build ${target#*=} failed (see the compiler output above)"
  built "$name" "$t0"
done
t0=$(date +%s)
(cd "$HERE/coredns" && go build -p "$PARALLEL" -ldflags "-s -w" -o "$TMP_DIR/bin/coredns" .) \
  || fail "binary 'coredns': go build in tools/node/coredns failed"
built coredns "$t0"
t0=$(date +%s)
(cd "$HERE/pause" && go build -ldflags "-s -w" -o "$TMP_DIR/bin/pause" .) || fail "binary 'pause': go build failed"
built pause "$t0"

mv -T "$TMP_DIR" "$KEY_DIR" || fail "step 'publish': could not move $TMP_DIR to $KEY_DIR"
rm -rf "$KEY_DIR/module"
ls -1dt "$CACHE_ROOT"/v*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
echo "build took $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
