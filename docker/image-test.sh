#!/usr/bin/env bash
# Build the CPU image with podman and run component commands in it, from nothing, re-runnable.
#
#   bash docker/image-test.sh          (or: make image-test)
#
# 1. installs podman, buildah, runc and debootstrap when missing (root only);
# 2. writes a containers.conf and a storage.conf under $WORK (git-ignored build/podman/) and
#    exports CONTAINERS_CONF / CONTAINERS_STORAGE_CONF: /etc is never touched;
# 3. makes the base image $BASE_IMAGE once with debootstrap (no registry is reachable here);
# 4. builds $IMAGE from docker/Dockerfile with the host's CA bundle as a build secret, and in
#    the `local` build context (build/local/, git- and docker-ignored) the host's CPU torch
#    wheel (never PyPI's CUDA build) and the versions of .venv as constraints.txt;
# 5. runs `mentoring line generate` then `mentoring validate` on the tiny line in a bind-mounted
#    temporary folder, one container per stage as a Kubeflow component would, and checks the
#    exit codes and outputs; then writes the line into volumes whose root belongs to root (no
#    fsGroup: refused with a clear error; group-0 writable: written by uid 10001 and an
#    arbitrary uid of group 0; fsGroup emulated with --group-add: written);
# 6. serves the Docker-compatible API (podman system service), lists the images with the Python
#    docker SDK, and runs the whole retraining pipeline on a tiny line with kfp.local.DockerRunner
#    (`mentoring kfp run-local --image $IMAGE`): every task in its own container of the image.
#    IMAGE_TEST_PIPELINE=0 skips both.
# Prints the time of each step. Afterwards, for podman by hand: source build/podman/env.sh
#
# Environment (all optional):
#   IMAGE                 tag to build                    [localhost/mentoring:dev]
#   BASE_IMAGE            base image, made if absent      [localhost/debian-python:base]
#   WORK                  podman config/storage/runs      [build/podman]
#   PODMAN_GRAPHROOT      image storage                   [$WORK/storage]
#   DEBIAN_MIRROR         debootstrap mirror              [the one apt uses, else deb.debian.org]
#   TORCH_WHEEL           the CPU torch wheel             [searched in pip's find-links folders]
#   CA_BUNDLE             CA bundle for pip in the build  [/etc/ssl/certs/ca-certificates.crt]
#   BUILD_TIMEOUT         seconds for podman build        [1800]
#   RUN_TIMEOUT           seconds per container           [600]
#   IMAGE_TEST_PIPELINE   0: no Docker API, no pipeline  [1]
#   PINNED                0: no constraints from .venv   [1]
#   KEEP_RUN              1: keep the run folder          [0]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

IMAGE="${IMAGE:-localhost/mentoring:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:base}"
WORK="${WORK:-$REPO/build/podman}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
PODMAN_GRAPHROOT="${PODMAN_GRAPHROOT:-$WORK/storage}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BUILD_TIMEOUT="${BUILD_TIMEOUT:-1800}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
IMAGE_TEST_PIPELINE="${IMAGE_TEST_PIPELINE:-${IMAGE_TEST_DOCKER_API:-1}}"
KEEP_RUN="${KEEP_RUN:-0}"
PACKAGES=(podman buildah runc debootstrap)
CONTAINER_PREFIX="mentoring-image-test-$$"

# ------------------------------------------------------------------ timings and cleanup
TIMES=()
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
T_START="$(now_ms)"
STEP_NAME=""
STEP_START=""
# step NAME COMMAND...: run and time one step. The command runs under `set -e` (no `||` around
# it, where bash would ignore errexit); a failing step is reported by the EXIT trap.
step() {
    STEP_NAME="$1"
    shift
    echo
    echo "==> $STEP_NAME"
    STEP_START="$(now_ms)"
    "$@"
    TIMES+=("$(printf '%-40s %7s s' "$STEP_NAME" "$(seconds_since "$STEP_START")")")
    STEP_NAME=""
}

# bounded SECONDS COMMAND...: run with a time limit, in the background so that the INT/TERM trap
# runs at once (bash defers traps while a foreground child runs) and stops it.
CHILD_PID=""
bounded() {
    local limit="$1" rc=0
    shift
    timeout --kill-after=30 "$limit" "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    [ "$rc" -ne 124 ] || echo "timed out after $limit s: $*" >&2
    return "$rc"
}

RUN_DIR=""
SERVICE_PID=""
BUILD_CONTAINERS_BEFORE=""
BUILD_CGROUPS_BEFORE=""
build_cgroups() {  # the cgroups of buildah's RUN steps (cgroupfs manager: buildah-buildah<N>)
    find /sys/fs/cgroup/pids /sys/fs/cgroup -maxdepth 1 -name 'buildah-buildah*' 2>/dev/null | sort
}
# podman 4.3 leaves the RUN step of an interrupted build running (buildah-oci-runtime dies, its
# container process, PID 1 of its namespace, lives on): kill the processes of the cgroups that
# appeared during this build.
kill_build_processes() {
    local cg pid
    for cg in $(comm -13 <(echo "$BUILD_CGROUPS_BEFORE") <(build_cgroups)); do
        [ -f "$cg/cgroup.procs" ] || continue
        while read -r pid; do
            kill -KILL "$pid" 2>/dev/null
        done <"$cg/cgroup.procs"
    done
}
cleanup() {
    local rc=$?
    set +e
    if [ -n "$CHILD_PID" ]; then  # interrupted: stop the bounded command (timeout forwards)
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    if [ -n "$STEP_NAME" ]; then
        TIMES+=("$(printf '%-40s %7s s  FAILED (exit %s)' "$STEP_NAME" "$(seconds_since "$STEP_START")" "$rc")")
    fi
    if command -v podman >/dev/null 2>&1 && [ -n "${CONTAINERS_CONF:-}" ]; then
        local ids
        ids="$(timeout 60 podman ps -aq --filter "name=^${CONTAINER_PREFIX}" 2>/dev/null)"
        # shellcheck disable=SC2086  # one id per word
        [ -z "$ids" ] || timeout 60 podman rm -f -t 5 $ids >/dev/null 2>&1
        if [ "$STEP_NAME" = "podman build $IMAGE" ]; then
            kill_build_processes
            local c
            for c in $(comm -13 <(echo "$BUILD_CONTAINERS_BEFORE") \
                <(timeout 60 buildah containers -q | sort)); do
                timeout 60 buildah rm "$c" >/dev/null 2>&1
            done
        fi
    fi
    if [ -n "$SERVICE_PID" ]; then
        kill "$SERVICE_PID" 2>/dev/null
        wait "$SERVICE_PID" 2>/dev/null
    fi
    if [ -n "$RUN_DIR" ] && [ "$KEEP_RUN" != 1 ]; then
        rm -rf "$RUN_DIR"
    fi
    echo
    echo "==> timings ($IMAGE)"
    local t
    for t in "${TIMES[@]}"; do echo "  $t"; done
    printf '  %-40s %7s s\n' "total" "$(seconds_since "$T_START")"
    if [ "$rc" -eq 0 ]; then echo "image-test: OK"; else echo "image-test: FAILED (exit $rc)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "image-test: $*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. packages
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        command -v "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "present: ${PACKAGES[*]}"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: install them (apt-get install -y ${PACKAGES[*]}) or run as root"
    echo "installing ${missing[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
}

# ------------------------------------------------------------------ 2. podman configuration
configure_podman() {
    local nofile
    nofile="$(ulimit -Hn)"
    [ "$nofile" != unlimited ] || nofile=1048576
    [ "$nofile" -le 1048576 ] || nofile=1048576
    # runc sets the containers' rlimits: above the caller's hard limit it fails with "error
    # setting rlimit type 7 (nofile): operation not permitted" (no CAP_SYS_RESOURCE here).
    cat >"$WORK/containers.conf" <<EOF
# written by docker/image-test.sh
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    mkdir -p "$PODMAN_GRAPHROOT" "$WORK/run"
    cat >"$WORK/storage.conf" <<EOF
# written by docker/image-test.sh
[storage]
driver = "overlay"
graphroot = "$PODMAN_GRAPHROOT"
runroot = "$WORK/run"
EOF
    cat >"$WORK/env.sh" <<EOF
# source this file to use the same podman configuration and storage as docker/image-test.sh
export CONTAINERS_CONF="$WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
EOF
    export CONTAINERS_CONF="$WORK/containers.conf"
    export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
    timeout 60 podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}} {{.Store.GraphRoot}}'
}

# ------------------------------------------------------------------ 3. base image
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n 1 || true)"
    [ -n "$uri" ] || uri="$(grep -hsE '^deb ' /etc/apt/sources.list 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n 1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

make_base_image() {
    if timeout 60 podman image exists "$BASE_IMAGE"; then
        echo "present: $BASE_IMAGE"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "$BASE_IMAGE is absent and debootstrap needs root"
    local rootfs="$WORK/rootfs" mirror
    mirror="$(debian_mirror)"
    rm -rf "$rootfs"  # a previous interrupted attempt
    echo "debootstrap bookworm from $mirror"
    bounded 1200 debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; return 1; }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*.log \
        "$rootfs"/var/cache/debconf/*-old
    tar -C "$rootfs" -c . | timeout 600 podman import \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    timeout 60 podman image exists "$BASE_IMAGE"
}

# ------------------------------------------------------------------ 4. build
torch_pin() {
    python3 -c 'import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(m.group(1) for d in deps if (m := re.fullmatch(r"torch\s*==\s*([\w.]+)", d.strip()))))'
}

stage_torch_wheel() {
    local pin wheel="${TORCH_WHEEL:-}" dir
    pin="$(torch_pin)"
    if [ -z "$wheel" ]; then
        # pip's find-links folders (pip config, PIP_FIND_LINKS), then the usual places
        local dirs=()
        read -r -a dirs <<<"${PIP_FIND_LINKS:-}"
        while IFS= read -r dir; do dirs+=("$dir"); done < <(
            { pip3 config list 2>/dev/null || python3 -m pip config list 2>/dev/null || true; } \
                | sed -nE "s/^[^=]*find-links='?([^']*)'?$/\1/p" | tr ' ' '\n')
        dirs+=(/opt/wheels /opt/pypi "$HOME/wheels")
        for dir in "${dirs[@]}"; do
            dir="${dir#file://}"
            [ -d "$dir" ] || continue
            wheel="$(find "$dir" -maxdepth 2 -name "torch-${pin}+cpu-cp311-*.whl" 2>/dev/null \
                | sort | tail -n 1)"
            [ -z "$wheel" ] || break
        done
    fi
    [ -n "$wheel" ] && [ -f "$wheel" ] \
        || die "no torch-${pin}+cpu-cp311 wheel found (set TORCH_WHEEL): refusing PyPI's CUDA build"
    local dest
    mkdir -p build/local
    dest="build/local/$(basename "$wheel")"
    # stale pins out; the wheel in (a hard link when possible: no copy of ~190 MB)
    find build/local -maxdepth 1 -name 'torch-*.whl' ! -name "$(basename "$wheel")" -delete
    if ! cmp -s "$wheel" "$dest" 2>/dev/null; then
        rm -f "$dest"
        ln "$wheel" "$dest" 2>/dev/null || cp "$wheel" "$dest"
    fi
    echo "torch $pin: $wheel -> $dest"
}

write_constraints() {
    # The image gets the versions the tests ran with: the pip freeze of .venv (torch and the
    # package itself excluded; PINNED=0 leaves the resolution to pip).
    local out=build/local/constraints.txt py="$REPO/.venv/bin/python"
    mkdir -p build/local
    if [ "${PINNED:-1}" != 1 ] || [ ! -x "$py" ]; then
        rm -f "$out"
        echo "no constraints: pip resolves pyproject.toml's ranges"
        return 0
    fi
    timeout 120 "$py" -m pip freeze --exclude-editable --disable-pip-version-check \
        | grep -vE '^(torch|mentoring)==| @ |^-e ' >"$out.tmp"
    if ! cmp -s "$out.tmp" "$out" 2>/dev/null; then mv "$out.tmp" "$out"; else rm -f "$out.tmp"; fi
    echo "$(wc -l <"$out") pins from $py -> $out"
}

build_image() {
    local revision secret_args=() constraints_sha=""
    revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then  # built from uncommitted changes
        revision="${revision}-dirty"
    fi
    if [ -s "$CA_BUNDLE" ]; then
        secret_args=(--secret "id=pip_cert,src=$CA_BUNDLE")
    fi
    if [ -s build/local/constraints.txt ]; then
        constraints_sha="$(sha256sum build/local/constraints.txt | cut -d' ' -f1)"
    fi
    # a killed build leaves its working containers and its RUN process behind: the EXIT trap
    # removes the new ones
    BUILD_CONTAINERS_BEFORE="$(timeout 60 buildah containers -q | sort)"
    BUILD_CGROUPS_BEFORE="$(build_cgroups)"
    # torch comes from build/local (the PyTorch index, the default otherwise, is unreachable);
    # docker format: the OCI format drops SHELL (the RUNs need bash with pipefail)
    local build_args=(
        --file docker/Dockerfile
        --format docker
        --build-arg "BASE_IMAGE=$BASE_IMAGE"
        --build-context "local=$REPO/build/local"
        --build-arg "CONSTRAINTS_SHA256=$constraints_sha"
        --build-arg "VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
        --build-arg "REVISION=$revision"
        --build-arg "SOURCE_URL=$(git remote get-url origin 2>/dev/null || echo unknown)"
        "${secret_args[@]}"
        --layers --force-rm
    )
    bounded "$BUILD_TIMEOUT" podman build "${build_args[@]}" --tag "$IMAGE" .
    # Tag the builder stage too (all cached: seconds), so that pruning the earlier builds' images
    # (a new ~2 GB venv layer per source change) keeps the cache of its layers.
    bounded "$BUILD_TIMEOUT" podman build "${build_args[@]}" --target builder \
        --tag "$IMAGE-builder" . >/dev/null
    BUILD_CONTAINERS_BEFORE=""
    timeout 300 podman image prune -f >/dev/null
    timeout 60 podman image inspect "$IMAGE" \
        --format 'size {{.Size}} bytes, user {{.Config.User}}, cmd {{.Config.Cmd}}, entrypoint {{.Config.Entrypoint}}'
    # shellcheck disable=SC2016  # a Go template, not shell
    timeout 60 podman image inspect "$IMAGE" --format '{{range $k, $v := .Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' \
        | grep '^org.opencontainers'
}

# ------------------------------------------------------------------ 5. component commands
in_container() {  # in_container NAME COMMAND...: one container per stage, like a component
    local name="$CONTAINER_PREFIX-$1"
    shift
    bounded "$RUN_TIMEOUT" podman run --rm --name "$name" \
        --volume "$RUN_DIR:/work" --workdir /work \
        "$IMAGE" "$@"
}

check_image() {
    # shellcheck disable=SC2016  # expanded in the container
    in_container whoami bash -c 'test "$(id -u)" != 0 && python3 -c "import kfp, mentoring, torch; print(\"uid\", __import__(\"os\").getuid(), \"kfp\", kfp.__version__, \"torch\", torch.__version__)"'
}

make_run_dir() {
    mkdir -p "$WORK/runs"
    RUN_DIR="$(mktemp -d "$WORK/runs/run.XXXXXX")"
    chmod 1777 "$RUN_DIR"  # the image's user (uid 10001) writes into it
    echo "$RUN_DIR"
}

stage_generate() {
    in_container line-generate mentoring line generate -p /app/params.yaml -S base.profile=tiny \
        --data /work/data --results /work/results/line
    test -s "$RUN_DIR/data/manifests/line.parquet" || die "no manifest: data/manifests/line.parquet"
    ls "$RUN_DIR/data/manifests" "$RUN_DIR/results/line"
}

stage_validate() {
    in_container validate mentoring validate -p /app/params.yaml -S base.profile=tiny \
        --manifest /work/data/manifests/line.parquet --results /work/results/validate
    test -s "$RUN_DIR/results/validate/metrics.json" || die "no results/validate/metrics.json"
    cat "$RUN_DIR/results/validate/metrics.json"
}

# Fresh volumes (KFP sets no fsGroup): the line stage writing into a volume whose root belongs to
# root, as ingest does into the run workspace. Root-owned 0755: refused at once, naming the owner,
# mode and the fix (exit code 2, nothing written); root-owned but group-0 writable (OpenShift-style
# storage): the image's user (gid 0) and an arbitrary uid of group 0 write; a volume of group
# 10001 with that group added to the process (what fsGroup 10001 gives a pod): written.
in_volume() {  # in_volume NAME VOLUME_DIR PODMAN_ARGS... -- COMMAND...
    local name="$CONTAINER_PREFIX-$1" vol="$2" args=()
    shift 2
    while [ "$1" != "--" ]; do args+=("$1"); shift; done
    shift
    bounded "$RUN_TIMEOUT" podman run --rm --name "$name" --volume "$vol:/kfp-workspace" \
        "${args[@]}" "$IMAGE" "$@"
}

line_into() {  # the tiny line into the volume, as the ingest component's stage writes it
    echo mentoring line generate -p /app/params.yaml -S base.profile=tiny \
        --data /kfp-workspace/run-1/data --results /tmp/line
}

stage_volumes() {
    local base="$RUN_DIR/volumes" out rc=0
    mkdir -p "$base/root" "$base/group0" "$base/fsgroup"
    chown 0:0 "$base/root" "$base/group0"
    chmod 0755 "$base/root"
    chmod 2775 "$base/group0"
    chown 0:10001 "$base/fsgroup"
    chmod 2775 "$base/fsgroup"
    # shellcheck disable=SC2046  # the command's words
    out="$(in_volume vol-root "$base/root" -- $(line_into) 2>&1)" || rc=$?
    echo "root-owned 0755: exit $rc: $(echo "$out" | tail -n 1 | cut -c1-160)..."
    [ "$rc" -eq 2 ] || { echo "$out" >&2; die "root-owned volume: expected exit 2, got $rc"; }
    grep -q "not writable by this process (uid 10001, gid 0" <<<"$out" \
        && grep -q "owned by 0:0, mode 0755" <<<"$out" && grep -q fsGroup <<<"$out" \
        || { echo "$out" >&2; die "root-owned volume: the error does not say who owns what"; }
    [ -z "$(ls -A "$base/root")" ] || die "root-owned volume: something was written"
    local who
    for who in "10001:0" "123456:0"; do
        rm -rf "$base/group0/run-1"
        # shellcheck disable=SC2046
        in_volume "vol-group0-${who%%:*}" "$base/group0" --user "$who" -- $(line_into) >/dev/null
        test -s "$base/group0/run-1/data/manifests/line.parquet" \
            || die "group-0 writable volume, user $who: no manifest"
        echo "root-owned, group-0 writable, user $who: written ($(stat -c '%u:%g' "$base/group0/run-1"))"
    done
    # shellcheck disable=SC2046
    in_volume vol-fsgroup "$base/fsgroup" --group-add 10001 -- $(line_into) >/dev/null
    test -s "$base/fsgroup/run-1/data/manifests/line.parquet" || die "fsGroup volume: no manifest"
    echo "root:10001 2775 with group 10001 added (fsGroup): written"
}

# ------------------------------------------------------------------ 6. Docker-compatible API
docker_api() {
    local sock="$WORK/podman.sock"
    rm -f "$sock"
    podman system service --time=0 "unix://$sock" >"$WORK/service.log" 2>&1 &
    SERVICE_PID=$!
    for _ in $(seq 1 60); do
        [ -S "$sock" ] && break
        kill -0 "$SERVICE_PID" 2>/dev/null || { cat "$WORK/service.log" >&2; return 1; }
        sleep 0.5
    done
    [ -S "$sock" ] || { echo "no socket after 30 s" >&2; return 1; }
    local py="$REPO/.venv/bin/python"
    [ -x "$py" ] || py=python3
    if ! "$py" -c 'import docker' 2>/dev/null; then
        echo "the docker SDK is not installed for $py: pip install docker" >&2
        return 1
    fi
    DOCKER_HOST="unix://$sock" IMAGE="$IMAGE" timeout 60 "$py" -c '
import os, docker
client = docker.from_env(timeout=30)
print("API", client.version()["ApiVersion"], "server", client.version()["Version"])
tags = [t for i in client.images.list() for t in i.tags]
print("images:", ", ".join(sorted(tags)))
assert os.environ["IMAGE"] in tags, "built image not listed"
'
}

# The retraining pipeline, every task a container of the image (kfp.local.DockerRunner over
# podman's Docker API; see pipelines/submit.py for the auto-remove workaround), then checks that
# the champion alias was set in the run's MLflow store.
pipeline_run() {
    local py="$REPO/.venv/bin/python" kfp="$RUN_DIR/kfp"
    mkdir -p "$kfp"
    (cd "$kfp" && DOCKER_HOST="unix://$WORK/podman.sock" bounded 1500 \
        "$REPO/.venv/bin/mentoring" kfp run-local --image "$IMAGE" --pipeline retraining \
        --params "$REPO/params.yaml" --profile tiny --workdir "$kfp/work" \
        -S train_baseline.epochs=2 -S train.epochs=1 -S mine.threshold=0.01 \
        -S evaluate.n_examples=2 --param 'strategies=[scratch, transfer+omnia]' \
        >"$kfp/run.log" 2>&1) || { tail -n 60 "$kfp/run.log" >&2; return 1; }
    grep -E "finished with status|succeeded in" "$kfp/run.log" | sed 's/\x1b\[[0-9;]*m//g'
    DB="$kfp/work/outputs/mlflow.db" timeout 120 "$py" -c '
import os
from mlflow import MlflowClient
uri = "sqlite:///" + os.environ["DB"]
c = MlflowClient(tracking_uri=uri, registry_uri=uri)
v = c.get_model_version_by_alias("defect-segmenter", "champion")
print("champion: defect-segmenter version", v.version, "variant", v.tags.get("variant"))
'
}

# ------------------------------------------------------------------ main
step "packages (${PACKAGES[*]})" install_packages
step "podman configuration" configure_podman
step "base image $BASE_IMAGE" make_base_image
step "torch CPU wheel -> build/local" stage_torch_wheel
step "constraints from .venv" write_constraints
step "podman build $IMAGE" build_image
step "run folder" make_run_dir
step "container: non-root, imports" check_image
step "component: mentoring line generate" stage_generate
step "component: mentoring validate" stage_validate
step "fresh volumes: root-owned, group 0, fsGroup" stage_volumes
if [ "$IMAGE_TEST_PIPELINE" = 1 ]; then
    step "Docker API (podman system service)" docker_api
    step "pipeline: retraining, DockerRunner" pipeline_run
fi
