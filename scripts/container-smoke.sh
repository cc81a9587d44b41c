#!/usr/bin/env bash
# Build the image from the unchanged Dockerfile and prove it works against this machine's PostgreSQL:
# migrations as a one-off container, the service container healthy, a create/get/patch round trip
# over HTTP, then a SIGTERM stop that must exit 0. No Docker engine needed: buildah + podman (runc).
#
#   scripts/container-smoke.sh    # as root; 3-5 min cold (base image + full build), 20 s warm
#
# Env: IMAGE (default localhost/sessions-service:dev), BASE_IMAGE (container-base.sh); PGHOST/PGPORT/PGUSER for the PostgreSQL that
# gets a throwaway database (default 127.0.0.1:5432, root, trust auth); HEALTH_PATH (/healthz).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-localhost/sessions-service:dev}
# The base image's stand-in (container-base.sh), passed to the Dockerfile's PYTHON_IMAGE.
export BASE_IMAGE=${BASE_IMAGE:-localhost/python-standin:3.12-slim}
HEALTH_PATH=${HEALTH_PATH:-/healthz}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-root}

SUFFIX=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
DB_NAME=smoke_$SUFFIX
CONTAINER=sessions-smoke-$SUFFIX
WORK=$(mktemp -d /tmp/container-smoke.XXXXXX)
DB_CREATED=0
COLLECTOR_PID=
STARTED=$SECONDS

log() { printf 'container smoke: %s\n' "$*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    if podman container exists "$CONTAINER" 2>/dev/null; then
        [[ $rc -ne 0 ]] && { log "service logs:"; podman logs --tail 50 "$CONTAINER" >&2; }
        podman rm --force --time 5 "$CONTAINER" >/dev/null 2>&1
    fi
    [[ -n $COLLECTOR_PID ]] && kill "$COLLECTOR_PID" 2>/dev/null
    if [[ $DB_CREATED == 1 ]]; then
        timeout 30 dropdb --if-exists --force "$DB_NAME" || log "could not drop database $DB_NAME"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The rlimits and runtime that work here (crun and the default limits do not); host networking only.
PODMAN_RUN=(podman run --runtime runc --network host
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http METHOD PATH [BODY [CONTENT-TYPE]] -> prints the status code; the body lands in $WORK/body.
http() {
    local method=$1 path=$2 body=${3:-} content_type=${4:-application/json}
    local args=(--silent --show-error --max-time 10 --output "$WORK/body" --write-out '%{http_code}'
        --request "$method")
    [[ -n $body ]] && args+=(--header "Content-Type: $content_type" --data "$body")
    [[ -n ${TOKEN:-} ]] && args+=(--header "Authorization: Bearer $TOKEN")
    curl "${args[@]}" "http://127.0.0.1:$PORT$path"
}

json_field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/body" "$1"; }

expect_status() {
    local want=$1 got=$2 what=$3
    [[ $got == "$want" ]] || fail "$what: HTTP $got, expected $want: $(head -c 500 "$WORK/body")"
    log "$what -> $got"
}

log "preparing buildah/podman and the base image"
"$ROOT/scripts/container-base.sh"

log "building $IMAGE"
build_started=$SECONDS
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
REVISION=$(git -C "$ROOT" rev-parse HEAD)
timeout 900 buildah bud --layers --isolation chroot --pull-never --format docker \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg REVISION="$REVISION" \
    -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    fail "image build"
}
log "built in $((SECONDS - build_started)) s"
labelled=$(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$IMAGE")
[[ $labelled == "$REVISION" ]] || fail "the image's revision label is '$labelled', not $REVISION"
log "labelled with its commit, $REVISION"

timeout 10 pg_isready --quiet || fail "no PostgreSQL answers at $PGHOST:$PGPORT"
timeout 30 createdb "$DB_NAME"
DB_CREATED=1
DATABASE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$DB_NAME"
log "throwaway database $DB_NAME"

log "running migrations (the image's migrate command)"
timeout 120 "${PODMAN_RUN[@]}" --rm --no-healthcheck -e DATABASE_URL="$DATABASE_URL" \
    "$IMAGE" migrate || fail "migrate step"
head_revision=$(timeout 10 psql --no-psqlrc --tuples-only --no-align --dbname "$DB_NAME" \
    --command 'SELECT version_num FROM alembic_version')
[[ -n $head_revision ]] || fail "migrate left no alembic_version row"
log "schema at revision $head_revision"

# The runtime has no installers: they leave the venv in the builder stage, and the base
# interpreter in the runtime stage.
for interpreter in python /usr/local/bin/python; do
    found=$(timeout 60 "${PODMAN_RUN[@]}" --rm --no-healthcheck --entrypoint "$interpreter" "$IMAGE" -c \
        'import importlib.util as u; print([m for m in ("pip", "setuptools") if u.find_spec(m)])') ||
        fail "could not run $interpreter in the image"
    [[ $found == "[]" ]] || fail "the image's $interpreter has $found"
done
log "no pip or setuptools in the image (its venv and base interpreter)"

# The image has no secret of its own: its token command refuses to sign with the public
# development secret.
if timeout 60 "${PODMAN_RUN[@]}" --rm --no-healthcheck "$IMAGE" token --sub smoke \
    >"$WORK/token.out" 2>&1; then
    fail "the image signed a token without JWT_SECRET: $(cat "$WORK/token.out")"
fi
grep -q "JWT_SECRET is not set" "$WORK/token.out" || fail "token without JWT_SECRET: $(cat "$WORK/token.out")"
log "token without JWT_SECRET -> refused"

# Writes need a bearer token: a throwaway HS256 secret, and an admin token from the image's own
# `token` command signed with it.
JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
TOKEN=$(timeout 60 "${PODMAN_RUN[@]}" --rm --no-healthcheck -e JWT_SECRET="$JWT_SECRET" \
    "$IMAGE" token --sub smoke --admin 2>/dev/null) || fail "token command"
[[ -n $TOKEN ]] || fail "the token command printed nothing"

# An OTLP/HTTP collector on the host, for the traces the service exports once
# FASTAPI_OTEL_AUTO_CONFIGURE is set: it answers every export with success and appends each body
# to a file named by the signal (traces, metrics, logs).
OTLP_PORT=$(free_port)
mkdir "$WORK/otlp"
python3 - "$OTLP_PORT" "$WORK/otlp" <<'COLLECTOR' &
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Export(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(f"{sys.argv[2]}/{self.path.rsplit('/', 1)[-1]}", "ab") as received:
            received.write(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Export).serve_forever()
COLLECTOR
COLLECTOR_PID=$!

PORT=$(free_port)
log "starting the service on 127.0.0.1:$PORT, exporting traces to 127.0.0.1:$OTLP_PORT"
# The healthcheck timer needs systemd, which is absent here (podman says so on stderr, kept in
# $WORK/run.err); the image's HEALTHCHECK is run on demand below instead. A proxy that does not
# exist, as Docker passes its configured proxies into containers (no_proxy in CIDR form, which
# the OTLP exporter's requests understands and urllib does not): the HEALTHCHECK must not use it.
timeout 60 "${PODMAN_RUN[@]}" --detach --name "$CONTAINER" --health-interval disable \
    -e http_proxy=http://proxy.invalid:3128 -e no_proxy=127.0.0.0/8 \
    -e HOST=127.0.0.1 -e PORT="$PORT" -e DATABASE_URL="$DATABASE_URL" -e LOG_LEVEL=info \
    -e GRACEFUL_SHUTDOWN_TIMEOUT=5 -e DB_LOCK_TIMEOUT=5 -e DB_STATEMENT_TIMEOUT=10 \
    -e JWT_SECRET="$JWT_SECRET" \
    -e FASTAPI_OTEL_AUTO_CONFIGURE=true -e OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" \
    "$IMAGE" >/dev/null 2>"$WORK/run.err" || { cat "$WORK/run.err" >&2; fail "podman run"; }

deadline=$((SECONDS + 60))
until [[ $(http GET "$HEALTH_PATH" 2>/dev/null) == 200 ]]; do
    [[ $(podman inspect --format '{{.State.Running}}' "$CONTAINER") == true ]] \
        || fail "the service exited before it was healthy"
    ((SECONDS < deadline)) || fail "$HEALTH_PATH not 200 within 60 s"
    sleep 0.5
done
log "GET $HEALTH_PATH -> 200"
status=$(http GET /readyz)
expect_status 200 "$status" "GET /readyz (database answers, schema at head)"
timeout 30 podman healthcheck run "$CONTAINER" >/dev/null || fail "the image's HEALTHCHECK reports unhealthy"
log "image HEALTHCHECK -> healthy"

status=$(TOKEN='' http POST /sessions '{"event_id": 1, "title": "Smoke"}')
expect_status 401 "$status" "POST /sessions without a token"
status=$(http POST /sessions '{"event_id": 1, "title": "Smoke"}')
expect_status 201 "$status" "POST /sessions"
session_id=$(json_field id)

status=$(http GET "/sessions/$session_id")
expect_status 200 "$status" "GET /sessions/$session_id"
[[ $(json_field title) == Smoke ]] || fail "GET returned title '$(json_field title)'"

status=$(http PATCH "/sessions/$session_id" '{"title": "Smoke 2"}' application/merge-patch+json)
expect_status 200 "$status" "PATCH /sessions/$session_id"
[[ $(json_field title) == "Smoke 2" ]] || fail "PATCH returned title '$(json_field title)'"
[[ $(json_field version) == 2 ]] || fail "PATCH returned version $(json_field version), expected 2"

# The drain: a PATCH that waits behind a row lock (held 3 s by psql) is in flight when SIGTERM
# comes, and must still be answered (GRACEFUL_SHUTDOWN_TIMEOUT=5, within podman's 10 s before
# SIGKILL).
sql() { timeout 10 psql --no-psqlrc --tuples-only --no-align --dbname "$DB_NAME" --command "$1"; }
# until SQL: wait, at most 10 s, for the query to answer t.
until_sql() {
    local deadline=$((SECONDS + 10))
    until [[ $(sql "$1") == t ]]; do
        ((SECONDS < deadline)) || fail "timed out waiting for: $1"
        sleep 0.1
    done
}
timeout 30 psql --no-psqlrc --quiet --dbname "$DB_NAME" --command \
    "BEGIN; SELECT 1 FROM sessions WHERE id = $session_id FOR UPDATE; SELECT pg_sleep(3); COMMIT;" \
    >/dev/null &
LOCK_PID=$!
until_sql "SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = current_database()
    AND query LIKE '%pg_sleep(3)%' AND state = 'active' AND pid <> pg_backend_pid()"
http PATCH "/sessions/$session_id" '{"title": "Drained"}' application/merge-patch+json \
    >"$WORK/drained.status" &
PATCH_PID=$!
until_sql "SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = current_database()
    AND wait_event_type = 'Lock'"
kill -0 "$PATCH_PID" 2>/dev/null || fail "the PATCH was answered before the stop: no drain to check"
log "stopping with SIGTERM (podman stop -t 10) while a PATCH waits for a row lock"
stop_started=$SECONDS
timeout 30 podman stop --time 10 "$CONTAINER" >/dev/null 2>"$WORK/stop.err" \
    || { cat "$WORK/stop.err" >&2; fail "podman stop"; }
wait "$PATCH_PID" || fail "the PATCH in flight at the stop failed: $(head -c 500 "$WORK/body")"
wait "$LOCK_PID" || fail "psql holding the row lock"
expect_status 200 "$(cat "$WORK/drained.status")" "PATCH in flight at SIGTERM"
[[ $(json_field version) == 3 ]] || fail "the drained PATCH returned version $(json_field version)"
exit_code=$(timeout 30 podman wait "$CONTAINER")
[[ $exit_code == 0 ]] || fail "the service exited with $exit_code after SIGTERM, expected 0"
((SECONDS - stop_started < 10)) || fail "the service needed the SIGKILL fallback to stop"
podman logs "$CONTAINER" 2>&1 | grep -q 'Finished server process' \
    || fail "no graceful uvicorn shutdown in the logs"
log "exited 0 after $((SECONDS - stop_started)) s"

# The stop sent what was pending: the PATCH's span, under the image's service name. (Protobuf
# keeps strings as they are, so the raw export holds both.)
for expected in 'PATCH /sessions/{session_id}' sessions-service; do
    grep -qaF "$expected" "$WORK/otlp/traces" 2>/dev/null \
        || fail "no '$expected' in the traces the collector received"
done
log "traces exported over OTLP to the collector"

log "total $((SECONDS - STARTED)) s"
echo "container smoke: OK"
