#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by the cluster tests: kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd, kwok and kwokctl, from the Go module in this
# folder (go.mod pins every version; no registry ships these binaries).
#
# The binaries go to ${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/k8s/<key>/bin/, outside the repository
# on purpose: a fresh clone on the same machine (CI) reuses them. <key> is the Kubernetes version
# plus a hash of go.mod, go.sum and this script, so any change to them builds a new set.
#
#   tools/k8s/build.sh                  build if needed; the last line printed is the bin folder
#   tools/k8s/build.sh --print-bin-dir  print the bin folder for the current key, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KUBE_VERSION=v1.36.3
CACHE_ROOT=${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/k8s
KEY="$KUBE_VERSION-$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/build.sh" | sha256sum | cut -c1-16)"
KEY_DIR=$CACHE_ROOT/$KEY
BIN_DIR=$KEY_DIR/bin

# name=package; etcd's main package is the root of its server module.
TARGETS=(
  "kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler"
  "etcd=go.etcd.io/etcd/server/v3"
  "kwok=sigs.k8s.io/kwok/cmd/kwok"
  "kwokctl=sigs.k8s.io/kwok/cmd/kwokctl"
)

fail() { printf 'tools/k8s/build.sh FAILED: %s\n' "$*" >&2; exit 1; }

all_built() {
  local target
  for target in "${TARGETS[@]}"; do
    [ -x "$BIN_DIR/${target%%=*}" ] || return 1
  done
}

if [ "${1:-}" = "--print-bin-dir" ]; then
  echo "$BIN_DIR"
  exit 0
elif [ $# -gt 0 ]; then
  fail "unknown argument '$1' (use no argument, or --print-bin-dir)"
fi

if all_built; then
  echo "control plane binaries are cached for $KEY"
  echo "$BIN_DIR"
  exit 0
fi

export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || fail "step 'find go': no 'go' on PATH or in /usr/local/go/bin (Go >= 1.26 is needed)"

# Without these stamps the servers report v0.0.0, which breaks helm's and kwok's version checks.
# Kubernetes' own build sets the same keys in both packages (hack/lib/version.sh).
kube_major=${KUBE_VERSION#v}; kube_major=${kube_major%%.*}
kube_minor=${KUBE_VERSION#v*.}; kube_minor=${kube_minor%%.*}
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$kube_major -X $pkg.gitMinor=$kube_minor"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# etcd's version is a constant of its api module (go.mod pins it to the client Kubernetes selects)
# and kwok's own version is right in its source; kwokctl's default Kubernetes version is not.
LDFLAGS+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBE_VERSION#v}"

# Two cores: one package compiled at a time per core (peak memory stays around 1-2 GB). -mod=mod
# lets go add a go.sum line that a tidy missed instead of failing; go.mod fixes every version.
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false"
PARALLEL=${NEGRL_BUILD_PARALLEL:-2}

mkdir -p "$CACHE_ROOT"
# One build at a time per machine (set-up and a developer may start one together): two would
# double the memory and share the two cores. The winner's result may be ours, so check again.
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
  echo "another control plane build is running; waiting for it to finish"
  flock 9
fi
if all_built; then
  echo "control plane binaries are cached for $KEY"
  echo "$BIN_DIR"
  exit 0
fi
# A key folder missing a binary (deleted by hand) is rebuilt as a whole; temp folders left by a
# killed build are removed (we hold the lock, so no build is using them).
if [ -d "$KEY_DIR" ]; then rm -rf "$KEY_DIR"; fi
rm -rf "$CACHE_ROOT"/.build-*
TMP_DIR=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
trap 'exit 130' INT TERM

echo "building the control plane $KEY into $BIN_DIR (first build on 2 cores: about 7 minutes plus module downloads)"
start=$(date +%s)
(cd "$HERE" && go mod download) || fail "step 'go mod download' in $HERE (is the Go module proxy reachable?)"
mkdir -p "$TMP_DIR/bin"
for target in "${TARGETS[@]}"; do
  name=${target%%=*}
  pkg=${target#*=}
  t0=$(date +%s)
  (cd "$HERE" && go build -p "$PARALLEL" -ldflags "$LDFLAGS" -o "$TMP_DIR/bin/$name" "$pkg") \
    || fail "binary '$name': go build $pkg failed (see the compiler output above)"
  printf '  built %-24s %4ss\n' "$name" "$(( $(date +%s) - t0 ))"
done

# Atomic publish: the key folder appears complete or not at all.
mv -T "$TMP_DIR" "$KEY_DIR" || fail "step 'publish': could not move $TMP_DIR to $KEY_DIR"

# Each change to go.mod, go.sum or this script makes a new key (about 400 MB); keep the three
# newest so that checkouts of nearby commits still find theirs.
ls -1dt "$CACHE_ROOT"/v*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf

echo "binary sizes:"
(cd "$BIN_DIR" && du -h -- *) | sed 's/^/  /'
echo "  total $(du -sh "$BIN_DIR" | cut -f1)"
echo "build took $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
