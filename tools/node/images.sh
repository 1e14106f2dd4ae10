#!/usr/bin/env bash
# Builds the Dockerfile's images for the test node without any registry: podman on a Python base
# made with debootstrap (`--build-arg PYTHON_IMAGE=...`). podman's image store lives in the cache
# (${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/podman), so its layers survive like the Go builds do: a
# code change rebuilds only the layers that copy the code. Each image is tagged by a hash of what
# goes into its target; the cluster fixture (tests/fixtures/node.py) streams the ones its containerd
# lacks with --export, so no docker-archive is ever written to disk.
#
#   tools/node/images.sh [TARGET...]   build what is missing (default: pause operator worker sampler-cpu);
#                                      prints "TARGET IMAGE" per target
#   tools/node/images.sh --print       the same lines, building nothing
#   tools/node/images.sh --export IMAGE
#                                      the image as a docker-archive on stdout (for `ctr images import -`)
# Images are tagged localhost/negrl-<target>:<key>; pods use imagePullPolicy Never.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}
STORE=$CACHE/podman
SUITE=bookworm
MIRROR=${NEGRL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# crun refuses hybrid cgroup hierarchies; runc and cgroupfs work on these machines. The run root
# (locks, mounts) is per boot, on tmpfs; the image store is in the cache.
PODMAN=(podman --root "$STORE/storage" --runroot /run/negrl-podman --runtime runc --cgroup-manager cgroupfs)

fail() { printf 'tools/node/images.sh FAILED: %s\n' "$*" >&2; exit 1; }
hash_of() { sha256sum | cut -c1-16; }

if [ "${1:-}" = "--export" ]; then
  [ $# -eq 2 ] || fail "usage: --export IMAGE"
  exec "${PODMAN[@]}" save --format docker-archive "$2"
fi
PRINT=0
if [ "${1:-}" = "--print" ]; then PRINT=1; shift; fi
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pause operator worker sampler-cpu)

BASE_VERSION=2  # bump when build_base changes what goes into the base
BASE_KEY=$(echo "$SUITE $BASE_VERSION $MIRROR" | hash_of)
BASE=localhost/negrl-python-base:$BASE_KEY
# What goes into a target: the Dockerfile and the files it copies (tracked or not, not ignored).
# sampler-cpu copies no NegRL code, so a code change leaves it (7 GB) as it is.
inputs_of() {
  case $1 in
    sampler-cpu) echo Dockerfile pyproject.toml tools/vllm_requirements.py ;;
    *) echo Dockerfile pyproject.toml README.md operator sampler trainer ;;
  esac
}
key_of() {
  # shellcheck disable=SC2046
  (cd "$ROOT" && { echo "$BASE_KEY $1"; git ls-files -co --exclude-standard -- $(inputs_of "$1") \
    | LC_ALL=C sort | xargs sha256sum; } | hash_of)
}
image_of() { echo "localhost/negrl-$1:$(key_of "$1")"; }
build_base() {
  "${PODMAN[@]}" image exists "$BASE" && return 0
  echo "building the base image $BASE (debootstrap $SUITE, python3 with headers, venv at /opt/python)"
  local work; work=$(mktemp -d "$STORE/.base.XXXXXX")
  # a failure exits the script: leave no mount behind
  trap 'umount -l "'"$work"'/rootfs/proc" 2>/dev/null || true; rm -rf "'"$work"'"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,ca-certificates "$SUITE" "$work/rootfs" "$MIRROR" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; fail "debootstrap $SUITE"; }
  # This machine's CA bundle: pip inside image builds goes through its TLS-intercepting proxy.
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
  mount -t proc proc "$work/rootfs/proc"
  chroot "$work/rootfs" /usr/bin/python3 -m venv /opt/python || fail "python3 -m venv in the base"
  chroot "$work/rootfs" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/python/bin/pip install -q \
    --upgrade pip setuptools wheel || fail "pip in the base"
  umount -l "$work/rootfs/proc"
  rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/* "$work/rootfs/root/.cache"
  chmod 0755 "$work/rootfs/root"
  tar -C "$work/rootfs" -c . | "${PODMAN[@]}" import \
    --change "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" - "$BASE" >/dev/null || fail "podman import of the base"
  rm -rf "$work"
  trap - EXIT
}

# The pod sandbox image: tools/node/build.sh's `pause` binary alone, as one layer.
PAUSE_BIN=$(bash "$HERE/build.sh" --print-bin-dir)/pause
PAUSE_IMAGE=localhost/negrl-pause:$({ cat "$PAUSE_BIN" 2>/dev/null || echo missing; } | hash_of)
build_pause() {
  local work
  [ -x "$PAUSE_BIN" ] || fail "no $PAUSE_BIN: run tools/node/build.sh first"
  work=$(mktemp -d "$STORE/.pause.XXXXXX")
  install -m 0755 "$PAUSE_BIN" "$work/pause"
  tar -C "$work" -c pause | "${PODMAN[@]}" import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null \
    || fail "podman import of the pause image"
  rm -rf "$work"
}

build_target() {
  local target=$1 image=$2 t0; t0=$(date +%s)
  build_base
  echo "building $image (Dockerfile target $target)" >&2
  "${PODMAN[@]}" build --network host --layers --build-arg "PYTHON_IMAGE=$BASE" --target "$target" \
    -t "$image" "$ROOT" >&2 || fail "podman build --target $target"
  printf 'built %s in %ss\n' "$image" "$(( $(date +%s) - t0 ))" >&2
}

# Older keys of a target and the layers only they used go: the store keeps one build of each.
forget_older() {
  local repository=${1%:*} name
  for name in $("${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' "$repository"); do
    [ "$name" = "$1" ] || "${PODMAN[@]}" rmi --force "$name" >/dev/null || true
  done
  "${PODMAN[@]}" image prune --force >/dev/null || true
}

if [ "$PRINT" = 0 ]; then
  mkdir -p "$STORE"
  exec 9>"$STORE/.build.lock"
  flock 9
fi
for target in "${TARGETS[@]}"; do
  if [ "$target" = pause ]; then image=$PAUSE_IMAGE; else image=$(image_of "$target"); fi
  if [ "$PRINT" = 0 ] && ! "${PODMAN[@]}" image exists "$image"; then
    if [ "$target" = pause ]; then build_pause; else build_target "$target" "$image"; fi
    forget_older "$image"
  fi
  echo "$target $image"
done
