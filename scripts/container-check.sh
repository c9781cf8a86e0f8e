#!/usr/bin/env bash
# Build jobsync's container image from Containerfile and run it, with no image registry:
#
#   1. a Debian bookworm base image made from Debian's archive with debootstrap (minbase),
#      cached in $JOBSYNC_CHECK_CACHE (default /var/cache/jobsync-ci) between runs;
#   2. jobsync's wheel and its dependencies' wheels, made beforehand with pip wheel;
#   3. docker build --build-arg BASE=jobsync-base:bookworm, from a context of wheels alone;
#   4. runs: `jobsync --version`; the user it runs as; `jobsync demo` on a read-only root with
#      a tmpfs and no network; the Kubernetes init container's copy of the key (install -m 0400);
#      the daemon as the image starts it (default command, key file at the default path,
#      HEALTHCHECK) against `jobsync simulate` in a second container whose loopback it shares,
#      until the HEALTHCHECK says healthy and /metrics counts a successful pass; `jobsync db
#      upgrade` and `db current` against PostgreSQL at 127.0.0.1:5432 when it answers; then
#      SIGTERM (docker stop) must stop the daemon with status 0.
#
# Every wait polls against a deadline. Containers, temporary files and the test database are
# removed at the end; the base image and the last built image stay, as a cache for next time
# (JOBSYNC_CHECK_PRUNE=1 removes the built image too). A dockerd started here is stopped here.
#
# Needs root, docker (Debian: docker.io) and debootstrap. When they are missing, or dockerd
# cannot start (no privileges, no cgroups), it prints one "skipped: ..." line and exits 0;
# with JOBSYNC_CHECK_REQUIRE_DOCKER=1 that is a failure (exit 1) instead.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
cache=${JOBSYNC_CHECK_CACHE:-/var/cache/jobsync-ci}
mirror=${JOBSYNC_CHECK_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
base_image=jobsync-base:$suite
image=jobsync:container-check
cluster=in01-0123456789abcdef
tag=jobsync-check-$$
deadline=${JOBSYNC_CHECK_DEADLINE:-120}   # seconds, for each thing the script waits for

say() { printf '== %s\n' "$*"; }
took() { printf '%ds' $((SECONDS - started)); }
fail() {
    printf 'container check FAILED after %s: %s\n' "$(took)" "$*" >&2
    exit 1
}
skip() {
    if [ "${JOBSYNC_CHECK_REQUIRE_DOCKER:-0}" = 1 ]; then
        fail "$* [required: JOBSYNC_CHECK_REQUIRE_DOCKER=1]"
    fi
    printf 'skipped: %s (container check, %s)\n' "$*" "$(took)"
    exit 0
}
# wait_for WHAT COMMAND...: run COMMAND until it succeeds, for at most $deadline seconds.
wait_for() {
    local what=$1 end=$((SECONDS + deadline))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            fail "timed out after ${deadline}s waiting for $what"
        fi
        sleep 0.5
    done
}

work=$(mktemp -d /tmp/jobsync-container-check.XXXXXX)
dockerd_pid=""
pg_db=""
cleanup() {
    local status=$?
    set +e
    for c in "$tag-daemon" "$tag-sim"; do
        docker rm -f "$c" >/dev/null 2>&1
    done
    if [ -n "$pg_db" ]; then
        psql -q -h 127.0.0.1 -p 5432 -U postgres -d postgres \
            -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1
    fi
    if [ "${JOBSYNC_CHECK_PRUNE:-0}" = 1 ]; then
        docker image rm -f "$image" >/dev/null 2>&1
    fi
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 1 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# -- what it needs ----------------------------------------------------------------------------
say "prerequisites"
[ "$(id -u)" -eq 0 ] || skip "needs root (to run dockerd and debootstrap)"
command -v docker >/dev/null || skip "docker is not installed (Debian: apt-get install docker.io)"
command -v debootstrap >/dev/null ||
    skip "debootstrap is not installed (Debian: apt-get install debootstrap)"
if docker info >/dev/null 2>&1; then
    echo "dockerd: already running"
else
    command -v dockerd >/dev/null || skip "dockerd is not installed (Debian: apt-get install docker.io)"
    echo "dockerd: starting one (log: $work/dockerd.log)"
    dockerd >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    end=$((SECONDS + 60))
    # Gone, or a zombie not reaped yet.
    alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
    until docker info >/dev/null 2>&1; do
        if ! alive "$dockerd_pid"; then
            dockerd_pid=""
            why=$(grep -iE 'level=(fatal|error)|failed' "$work/dockerd.log" | tail -n 1 || true)
            skip "dockerd cannot start here: ${why:-it exited}"
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            skip "dockerd did not answer within 60s: $(tail -n 1 "$work/dockerd.log")"
        fi
        sleep 0.5
    done
fi
echo "docker: $(docker version --format 'client {{.Client.Version}}, server {{.Server.Version}}')"
if ! docker buildx version >/dev/null 2>&1; then
    # A newer client without the buildx plugin refuses to build unless told to use the
    # classic builder, which every engine has and which this Containerfile needs no more than.
    export DOCKER_BUILDKIT=0
fi

python=${PYTHON:-python3}
py_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# The wheels are made here and installed there: the same CPython minor version as bookworm's.
[ "$py_version" = 3.11 ] ||
    fail "$python is Python $py_version; the wheels must be for bookworm's Python 3.11 (set PYTHON)"

# -- 1. the base image, from Debian's archive ----------------------------------------------------
say "base image $base_image (debootstrap --variant=minbase $suite)"
mkdir -p "$cache"
base_tar=$cache/$suite-minbase.tar
# A month-old base is made again (the build upgrades nothing in it).
if [ -f "$base_tar" ] && [ -n "$(find "$base_tar" -mtime +30)" ]; then
    rm -f "$base_tar"
    docker image rm -f "$base_image" >/dev/null 2>&1 || true
fi
if [ ! -f "$base_tar" ]; then
    rootfs=$cache/rootfs.tmp
    rm -rf "$rootfs"
    step=$SECONDS
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        fail "debootstrap failed: $(tail -n 3 "$work/debootstrap.log")"
    # Slim it as Debian's -slim images are: no package lists or caches, no documentation,
    # manual pages or translations, now or from packages installed later.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
EOF
    tar --numeric-owner -C "$rootfs" -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$rootfs"
    docker image rm -f "$base_image" >/dev/null 2>&1 || true
    echo "debootstrap: $((SECONDS - step))s, cached in $base_tar"
else
    echo "debootstrap: cached ($base_tar)"
fi
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    docker import "$base_tar" "$base_image" >/dev/null
fi
echo "base: $(docker image inspect --format '{{.Size}}' "$base_image" | awk '{printf "%.0f MB", $1/1e6}')"

# -- 2. the wheels, made beforehand --------------------------------------------------------------
say "wheels (pip wheel '.[postgres]')"
step=$SECONDS
mkdir -p "$work/context/wheels"
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/context/wheels" \
    "${root}[postgres]" >"$work/pip.log" 2>&1 || fail "pip wheel failed: $(tail -n 5 "$work/pip.log")"
echo "wheels: $(find "$work/context/wheels" -name '*.whl' | wc -l) in $((SECONDS - step))s"

# -- 3. the image --------------------------------------------------------------------------------
say "docker build -f Containerfile --build-arg BASE=$base_image"
step=$SECONDS
docker build --quiet -f "$root/Containerfile" --build-arg "BASE=$base_image" -t "$image" \
    "$work/context" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "docker build"; }
size=$(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')
echo "image: $image, $size, built in $((SECONDS - step))s"

# -- 4. run it -----------------------------------------------------------------------------------
say "jobsync --version"
version=$(docker run --rm --network none "$image" --version)
echo "$version"
expected=$("$python" -c 'import runpy; print(runpy.run_path("jobsync/_version.py")["__version__"])')
case "$version" in *"$expected"*) ;; *) fail "expected version $expected" ;; esac

say "runs as uid 10001"
ids=$(docker run --rm --network none --entrypoint id "$image")
echo "$ids"
case "$ids" in "uid=10001(jobsync) gid=10001(jobsync)"*) ;; *) fail "not uid 10001" ;; esac

say "jobsync demo (read-only root, tmpfs /data, no network)"
docker run --rm --network none --read-only --tmpfs /data:uid=10001,gid=10001,mode=0700 \
    --tmpfs /tmp "$image" demo --jobs 50 --rounds 2 >"$work/demo.log" 2>&1 ||
    { cat "$work/demo.log" >&2; fail "jobsync demo"; }
tail -n 5 "$work/demo.log"

say "the daemon, as the image starts it, against jobsync simulate in a second container"
# The simulator has a network namespace with a loopback and nothing else; the daemon joins it,
# so the daemon's plain-http base URL is a loopback one, and no traffic leaves the two.
key=test-key-$RANDOM$RANDOM
docker run -d --name "$tag-sim" --network none --read-only "$image" \
    simulate --port 19531 --jobs 40 --interval 0.5 --api-key "$key" >/dev/null
# The key as Kubernetes mounts a Secret when the pod has an fsGroup (mode 0440, group 10001),
# copied by deploy/kubernetes' init container command into a volume of uid 10001's, mode 0400.
mkdir -p "$work/secret" "$work/key"
printf '%s\n' "$key" >"$work/secret/api-key"
chown 0:10001 "$work/secret/api-key"
chmod 0440 "$work/secret/api-key"
chown 10001:10001 "$work/key"
docker run --rm --network none --read-only -v "$work/secret:/secret:ro" -v "$work/key:/key" \
    --entrypoint install "$image" -m 0400 /secret/api-key /key/api-key
echo "key file, as the init container leaves it: $(stat -c '%a %u:%g' "$work/key/api-key")"
[ "$(stat -c '%a %u' "$work/key/api-key")" = "400 10001" ] || fail "the key file's mode or owner"
sim_up() { docker logs "$tag-sim" 2>&1 | grep -q 'http://127.0.0.1:19531'; }
wait_for "the simulator to listen" sim_up
docker run -d --name "$tag-daemon" --network "container:$tag-sim" --read-only \
    --tmpfs /data:uid=10001,gid=10001,mode=0700 \
    -v "$work/key/api-key:/run/secrets/jobsync-api-key:ro" \
    -e JOBSYNC_BASE_URL=http://127.0.0.1:19531 -e JOBSYNC_CLUSTER_ID=$cluster \
    --health-interval 1s --health-start-period 60s \
    "$image" >/dev/null
# The image's own HEALTHCHECK (an HTTP GET of /healthz) decides "healthy".
healthy() {
    [ "$(docker inspect --format '{{.State.Health.Status}}' "$tag-daemon")" = healthy ]
}
step=$SECONDS
wait_for "the daemon's HEALTHCHECK to report healthy" healthy
echo "HEALTHCHECK: healthy after $((SECONDS - step))s"
fetch() {
    docker exec "$tag-daemon" python3 -c \
        "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9464$1', timeout=5).read().decode())"
}
echo "/healthz: $(fetch /healthz | tr '\n' ' ')"
passed() {
    fetch /metrics | grep -Eq "^jobsync_passes_total\{source=\"$cluster\",status=\"succeeded\"\} [1-9]"
}
wait_for "a successful pass in /metrics" passed
fetch /metrics | grep -E '^jobsync_(passes_total|jobs|healthy)' | sed 's/^/\/metrics: /'

if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    say "jobsync db upgrade and db current against PostgreSQL (127.0.0.1:5432), read-only root"
    pg_db=jobsync_container_check_$$
    psql -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -c "CREATE DATABASE \"$pg_db\"" >/dev/null
    pg_url=postgresql://postgres@127.0.0.1:5432/$pg_db
    # The host's loopback, for the host's server: --network host.
    docker run --rm --network host --read-only "$image" db upgrade --db "$pg_url" >"$work/pg.log" 2>&1 ||
        { cat "$work/pg.log" >&2; fail "jobsync db upgrade"; }
    docker run --rm --network host --read-only "$image" db current --db "$pg_url" 2>&1 | sed 's/^/db current: /'
    tables=$(psql -tA -h 127.0.0.1 -p 5432 -U postgres -d "$pg_db" \
        -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    echo "tables and views created: $tables"
    [ "$tables" -gt 5 ] || fail "db upgrade created $tables tables"
else
    echo "PostgreSQL: not reachable at 127.0.0.1:5432, db upgrade against it not checked"
fi

say "docker stop (SIGTERM) stops the daemon with status 0"
step=$SECONDS
docker stop --time 15 "$tag-daemon" >/dev/null
code=$(docker inspect --format '{{.State.ExitCode}}' "$tag-daemon")
echo "exit status $code after $((SECONDS - step))s"
[ "$code" = 0 ] || { docker logs "$tag-daemon" 2>&1 | tail -n 20 >&2; fail "daemon exit status $code"; }
if docker logs "$tag-daemon" 2>&1 | grep -q "$key"; then
    fail "the API key appears in the daemon's log"
fi
docker logs "$tag-daemon" 2>&1 | tail -n 2

echo "container check passed in $(took)"
