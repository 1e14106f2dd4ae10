#!/usr/bin/env bash
# Builds the Dockerfile's images for the test node without any registry: podman on a Python base
# made with debootstrap (`--build-arg PYTHON_IMAGE=...`), each saved as a docker-archive under
# ${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/images/, named by a hash of everything that goes into it.
# The cluster fixture (tests/fixtures/node.py) imports the archives into the node's containerd.
#
#   tools/node/images.sh [TARGET...]   build what is missing (default: pause operator worker sampler-cpu);
#                                      prints "TARGET IMAGE ARCHIVE" per target
#   tools/node/images.sh --print       the same lines, building nothing
# Images are tagged localhost/negrl-<target>:<key>; pods use imagePullPolicy Never.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${NEGRL_CACHE_DIR:-$HOME/.cache/negrl}/images
SUITE=bookworm
MIRROR=${NEGRL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# crun refuses hybrid cgroup hierarchies; runc and cgroupfs work on these machines
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

fail() { printf 'tools/node/images.sh FAILED: %s\n' "$*" >&2; exit 1; }
hash_of() { sha256sum | cut -c1-16; }

PRINT=0
if [ "${1:-}" = "--print" ]; then PRINT=1; shift; fi
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(pause operator worker sampler-cpu)

BASE_VERSION=2  # bump when build_base changes what goes into the base
BASE_KEY=$(echo "$SUITE $BASE_VERSION $MIRROR" | hash_of)
BASE=localhost/negrl-python-base:$BASE_KEY
# what goes into every target: the Dockerfile and the files it copies (tracked or not, not ignored)
SOURCE_KEY=$(cd "$ROOT" && { echo "$BASE_KEY"; git ls-files -co --exclude-standard -- Dockerfile pyproject.toml \
  README.md operator sampler trainer tools/vllm_requirements.py | LC_ALL=C sort | xargs sha256sum; } | hash_of)

archive_of() { echo "$CACHE/negrl-$1-$SOURCE_KEY.tar"; }
build_base() {
  "${PODMAN[@]}" image exists "$BASE" && return 0
  echo "building the base image $BASE (debootstrap $SUITE, python3 with headers, venv at /opt/python)"
  local work; work=$(mktemp -d "$CACHE/.base.XXXXXX")
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
PAUSE_KEY=$({ cat "$PAUSE_BIN" 2>/dev/null || echo missing; } | hash_of)
build_pause() {
  local image="localhost/negrl-pause:$PAUSE_KEY" archive="$CACHE/negrl-pause-$PAUSE_KEY.tar" work
  if [ ! -s "$archive" ]; then
    [ -x "$PAUSE_BIN" ] || fail "no $PAUSE_BIN: run tools/node/build.sh first"
    work=$(mktemp -d "$CACHE/.pause.XXXXXX")
    install -m 0755 "$PAUSE_BIN" "$work/pause"
    tar -C "$work" -c pause | "${PODMAN[@]}" import --change 'ENTRYPOINT ["/pause"]' - "$image" >/dev/null \
      || fail "podman import of the pause image"
    "${PODMAN[@]}" save --format docker-archive -o "$archive" "$image" >&2 || fail "podman save $image"
    rm -rf "$work"
    find "$CACHE" -maxdepth 1 -name "negrl-pause-*.tar" ! -name "$(basename "$archive")" -delete
  fi
  echo "pause $image $archive"
}

build_target() {
  [ "$1" = pause ] && { build_pause; return; }
  local target=$1 image="localhost/negrl-$1:$SOURCE_KEY" archive; archive=$(archive_of "$1")
  if [ -s "$archive" ]; then echo "$target $image $archive"; return 0; fi
  build_base
  local t0; t0=$(date +%s)
  echo "building $image (Dockerfile target $target)" >&2
  "${PODMAN[@]}" build --network host --layers --build-arg "PYTHON_IMAGE=$BASE" --target "$target" \
    -t "$image" "$ROOT" >&2 || fail "podman build --target $target"
  "${PODMAN[@]}" save --format docker-archive -o "$archive.partial" "$image" >&2 || fail "podman save $image"
  mv "$archive.partial" "$archive"
  printf 'built %s in %ss (%s)\n' "$image" "$(( $(date +%s) - t0 ))" "$(du -h "$archive" | cut -f1)" >&2
  # archives of older keys of this target are not needed any more
  find "$CACHE" -maxdepth 1 -name "negrl-$target-*.tar" ! -name "$(basename "$archive")" -delete
  echo "$target $image $archive"
}

if [ "$PRINT" = 1 ]; then
  for target in "${TARGETS[@]}"; do
    if [ "$target" = pause ]; then echo "pause localhost/negrl-pause:$PAUSE_KEY $CACHE/negrl-pause-$PAUSE_KEY.tar"
    else echo "$target localhost/negrl-$target:$SOURCE_KEY $(archive_of "$target")"; fi
  done
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9
for target in "${TARGETS[@]}"; do build_target "$target"; done
