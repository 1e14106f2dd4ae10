#!/usr/bin/env bash
# Builds the batch controllers the cluster tests run against the local control plane: Kueue's
# manager (queueing and admission) and the JobSet controller, from the Go module in this folder
# (go.mod pins both; JobSet is the version Kueue itself depends on). Their CRDs are copied from the
# modules' config/ folders, so binaries and CRDs always come from the same release. JobSet has its
# own module in jobset/ (it needs an older controller-runtime than Kueue).
#
# Outputs go to ${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/kueue/<key>/{bin,crds}/, outside the
# repository like tools/k8s/build.sh: <key> is a hash of both go.mod/go.sum pairs and this script.
#
#   tools/kueue/build.sh                build if needed; the last line printed is the key folder
#   tools/kueue/build.sh --print-dir    print the key folder for the current key, build nothing
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_ROOT=${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/kueue
KEY="$(cat "$HERE"/go.mod "$HERE"/go.sum "$HERE"/jobset/go.mod "$HERE"/jobset/go.sum "$HERE/build.sh" \
  | sha256sum | cut -c1-16)"
KEY_DIR=$CACHE_ROOT/$KEY
# name=module folder:package
TARGETS=("kueue=.:sigs.k8s.io/kueue/cmd/kueue" "jobset=jobset:sigs.k8s.io/jobset")

fail() { printf 'tools/kueue/build.sh FAILED: %s\n' "$*" >&2; exit 1; }

all_built() {
  local target
  for target in "${TARGETS[@]}"; do
    [ -x "$KEY_DIR/bin/${target%%=*}" ] || return 1
  done
  [ -d "$KEY_DIR/crds/kueue" ] && [ -d "$KEY_DIR/crds/jobset" ]
}

if [ "${1:-}" = "--print-dir" ]; then
  echo "$KEY_DIR"
  exit 0
elif [ $# -gt 0 ]; then
  fail "unknown argument '$1' (use no argument, or --print-dir)"
fi
if all_built; then
  echo "Kueue and JobSet are cached for $KEY"
  echo "$KEY_DIR"
  exit 0
fi

export PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || fail "step 'find go': no 'go' on PATH or in /usr/local/go/bin"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath -buildvcs=false"
PARALLEL=${NEGRL_BUILD_PARALLEL:-2}

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
  echo "another Kueue build is running; waiting for it to finish"
  flock 9
fi
if all_built; then
  echo "Kueue and JobSet are cached for $KEY"
  echo "$KEY_DIR"
  exit 0
fi
if [ -d "$KEY_DIR" ]; then rm -rf "$KEY_DIR"; fi
rm -rf "$CACHE_ROOT"/.build-*
TMP_DIR=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
trap 'exit 130' INT TERM

echo "building Kueue and JobSet $KEY into $KEY_DIR (first build on 2 cores: several minutes)"
start=$(date +%s)
for dir in "$HERE" "$HERE/jobset"; do
  (cd "$dir" && go mod download) || fail "step 'go mod download' in $dir (is the Go module proxy reachable?)"
done
mkdir -p "$TMP_DIR/bin" "$TMP_DIR/crds/kueue" "$TMP_DIR/crds/jobset"
for target in "${TARGETS[@]}"; do
  name=${target%%=*}
  dir=$HERE/${target#*=}; dir=${dir%%:*}
  pkg=${target#*:}
  t0=$(date +%s)
  (cd "$dir" && go build -p "$PARALLEL" -ldflags "-s -w" -o "$TMP_DIR/bin/$name" "$pkg") \
    || fail "binary '$name': go build $pkg failed (see the compiler output above)"
  printf '  built %-8s %4ss\n' "$name" "$(( $(date +%s) - t0 ))"
done
for module in kueue jobset; do
  from=$HERE; [ "$module" = jobset ] && from=$HERE/jobset
  dir=$(cd "$from" && go list -m -f '{{.Dir}}' "sigs.k8s.io/$module") || fail "step 'locate $module module'"
  cp "$dir"/config/components/crd/bases/*.yaml "$TMP_DIR/crds/$module/"
done

mv -T "$TMP_DIR" "$KEY_DIR" || fail "step 'publish': could not move $TMP_DIR to $KEY_DIR"
ls -1dt "$CACHE_ROOT"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
echo "build took $(( $(date +%s) - start ))s"
echo "$KEY_DIR"
