#!/usr/bin/env bash
# Property-tests the hub's HTTP API from its own OpenAPI document with schemathesis.
#
#   scripts/fuzz-api.sh                        # build the release binary, ~200 cases per operation
#   scripts/fuzz-api.sh --examples 25          # bounded run (also the default when CI=true)
#   scripts/fuzz-api.sh --binary target/debug/integrations-hub --seed 42 -- --phases fuzzing
#   scripts/fuzz-api.sh --postgres             # the same on a fresh PostgreSQL database
#
# It starts the hub on a fresh temporary SQLite (or PostgreSQL) database and a free loopback
# port with a random API key, waits for /health, seeds a subscription, events and dead letters,
# runs `st run` against /openapi.json, then fails if schemathesis reported failures, if the hub's
# log contains `panicked`, or if the hub died. Arguments after `--` go to `st run` unchanged.
#
# Network: schemathesis creates subscriptions to whatever URLs it invents and publishes events to
# them, so the hub would try to deliver webhooks to the internet. To keep every packet on this
# machine, the hub and schemathesis run in a fresh network namespace that has only loopback
# (`unshare --net`; `unshare --map-root-user --net` when not root). Where no namespace can be
# made it stops, unless IH_FUZZ_ALLOW_INTERNET=1 (the hub's client ignores HTTP(S)_PROXY, so
# there is no other way to keep its deliveries local).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

# Every check schemathesis has (no 5xx; documented status codes, content types, response bodies
# and headers; schema-invalid requests rejected; auth not ignored; 405s with Allow; stateful
# use-after-free and resource availability) except one, which is noise for this API:
# - positive_data_acceptance flags every 4xx to a schema-valid request, but the hub rightly
#   refuses schema-valid input on rules JSON Schema cannot express (SSRF-refused URLs, reserved
#   webhook header names, `until` before `since`, an Idempotency-Key reused for another body),
#   so it reports the design as bugs.
CHECKS=all
EXCLUDED_CHECKS=positive_data_acceptance

usage() {
    cat <<'EOF'
Usage: scripts/fuzz-api.sh [--examples N] [--binary PATH] [--seed N] [--postgres] [-- ST_RUN_ARGS...]

  --examples N   test cases per API operation (default 200; 25 when CI=true)
  --binary PATH  hub binary to test (default: cargo build --release, then use that)
  --seed N       schemathesis seed, to replay a run
  --postgres     test on a fresh PostgreSQL database instead of SQLite, reached through the
                 Unix socket in $PGHOST (default /var/run/postgresql) as $PGUSER (default
                 postgres); needs psql. Created before and dropped after the run.
  -- ARGS        passed to `st run` unchanged
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES=""
BINARY=""
SEED=""
POSTGRES=false
IN_NETNS=false
ST_EXTRA=()

while (($#)); do
    case "$1" in
    --examples)
        EXAMPLES=${2:?--examples needs a number}
        shift 2
        ;;
    --examples=*)
        EXAMPLES=${1#*=}
        shift
        ;;
    --binary)
        BINARY=${2:?--binary needs a path}
        shift 2
        ;;
    --binary=*)
        BINARY=${1#*=}
        shift
        ;;
    --seed)
        SEED=${2:?--seed needs a number}
        shift 2
        ;;
    --seed=*)
        SEED=${1#*=}
        shift
        ;;
    --postgres)
        POSTGRES=true
        shift
        ;;
    --in-netns) # internal: we are the re-executed copy inside the network namespace
        IN_NETNS=true
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        ST_EXTRA=("$@")
        break
        ;;
    *)
        echo "fuzz-api: unknown argument: $1" >&2
        usage >&2
        exit 2
        ;;
    esac
done

if [[ -z $EXAMPLES ]]; then
    if [[ ${CI:-} == true ]]; then EXAMPLES=25; else EXAMPLES=200; fi
fi
if ! [[ $EXAMPLES =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz-api: --examples must be a positive whole number, got '$EXAMPLES'" >&2
    exit 2
fi
if [[ -n $SEED && ! $SEED =~ ^[0-9]+$ ]]; then
    echo "fuzz-api: --seed must be a whole number, got '$SEED'" >&2
    exit 2
fi

VENV="$ROOT/target/fuzz-venv"
ST="$VENV/bin/st"

log() { printf 'fuzz-api: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Stage 1 (outside the namespace: needs the network for cargo and PyPI).
# ---------------------------------------------------------------------------------------------
if ! $IN_NETNS; then
    if [[ -z $BINARY ]]; then
        log "building the hub (cargo build --release)"
        (cd "$ROOT" && cargo build --release -p integrations-hub --bin integrations-hub)
        BINARY="${CARGO_TARGET_DIR:-$ROOT/target}/release/integrations-hub"
    fi
    if [[ ! -x $BINARY ]]; then
        log "no executable hub binary at $BINARY"
        exit 2
    fi
    BINARY=$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")

    if [[ ! -x $ST ]] || [[ $("$ST" --version 2>/dev/null) != "st, version $SCHEMATHESIS_VERSION" ]]; then
        log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
        [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    log "$("$ST" --version)"

    args=(--in-netns --examples "$EXAMPLES" --binary "$BINARY")
    [[ -n $SEED ]] && args+=(--seed "$SEED")
    $POSTGRES && args+=(--postgres)
    args+=(-- "${ST_EXTRA[@]}")
    # IH_FUZZ_NO_NETNS=1 acts as if no namespace could be made (to test that path).
    if [[ ${IH_FUZZ_NO_NETNS:-} == 1 ]]; then
        :
    elif [[ $(id -u) == 0 ]] && unshare --net true 2>/dev/null; then
        exec unshare --net -- "$BASH" "${BASH_SOURCE[0]}" "${args[@]}"
    elif unshare --map-root-user --net true 2>/dev/null; then
        exec unshare --map-root-user --net -- "$BASH" "${BASH_SOURCE[0]}" "${args[@]}"
    fi
    if [[ ${IH_FUZZ_ALLOW_INTERNET:-} != 1 ]]; then
        log "cannot create a network namespace (needs root or unprivileged user namespaces), so the"
        log "hub would deliver webhooks to the URLs schemathesis invents; set IH_FUZZ_ALLOW_INTERNET=1"
        log "to run anyway"
        exit 2
    fi
    log "cannot create a network namespace; IH_FUZZ_ALLOW_INTERNET=1: deliveries may leave this machine"
    ISOLATED=false
else
    ISOLATED=true
    # A new namespace has its loopback interface down.
    ip link set lo up 2>/dev/null ||
        "$VENV/bin/python" -c 'import fcntl,socket,struct
s=socket.socket(); req=struct.pack("16sH14x", b"lo", 0)
flags=struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, req))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))'
fi

# ---------------------------------------------------------------------------------------------
# Stage 2: run the hub and schemathesis.
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ih-fuzz.XXXXXX")
HUB_LOG="$WORK/hub.log"
REPORT_DIR="$WORK/report"
HUB_PID=""
ST_PID=""
PG_DB=""
KEEP_WORK=true

cleanup() {
    if [[ -n $ST_PID ]] && kill -0 "$ST_PID" 2>/dev/null; then
        kill -TERM "$ST_PID" 2>/dev/null || true
        wait "$ST_PID" 2>/dev/null || true
    fi
    if [[ -n $HUB_PID ]] && kill -0 "$HUB_PID" 2>/dev/null; then
        kill -TERM "$HUB_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$HUB_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_DB ]]; then
        psql -d postgres -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null ||
            log "could not drop the database $PG_DB"
    fi
    if $KEEP_WORK; then log "work dir kept: $WORK (hub log: $HUB_LOG)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A copy of the binary, so a rebuild cannot replace it under the running test.
cp "$BINARY" "$WORK/integrations-hub"

PORT=$("$VENV/bin/python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
API_KEY="fuzz-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
mkdir -p "$WORK/connectors"

DATABASE_URL="sqlite://$WORK/hub.db"
if $POSTGRES; then
    # The socket, not TCP: a Unix socket is reachable from inside the network namespace.
    export PGHOST="${PGHOST:-/var/run/postgresql}" PGUSER="${PGUSER:-postgres}"
    if [[ $PGHOST != /* ]]; then
        log "--postgres needs PGHOST to be the server's socket directory, got '$PGHOST'"
        exit 2
    fi
    command -v psql >/dev/null || {
        log "--postgres needs psql"
        exit 2
    }
    PG_DB="ih_fuzz_$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(6))')"
    psql -d postgres -qc "CREATE DATABASE $PG_DB" >/dev/null
    DATABASE_URL="postgres://$PGUSER@localhost/$PG_DB?host=$PGHOST"
fi

hub_env=(
    PATH="$PATH"
    HOME="${HOME:-/root}"
    RUST_BACKTRACE=1
    IH_DATABASE_URL="$DATABASE_URL"
    IH_BIND="127.0.0.1:$PORT"
    IH_CONNECTORS_DIR="$WORK/connectors"
    IH_API_KEYS="$API_KEY"
    IH_LOG_FORMAT=json
    IH_ALLOW_PRIVATE_DESTINATIONS=false
    # One attempt per delivery: every failed delivery becomes a dead letter at once, so the
    # attempts, dead-letter and replay endpoints are tested on real data within seconds.
    IH_DELIVERY_MAX_ATTEMPTS=1
)

log "starting the hub on $BASE (${DATABASE_URL%%:*}, work dir $WORK, network isolated: $ISOLATED)"
# env -i: no IH_* setting (a Slack token, say) leaks in from the caller's environment.
env -i "${hub_env[@]}" "$WORK/integrations-hub" serve >"$WORK/hub.stdout" 2>"$HUB_LOG" &
HUB_PID=$!

for _ in $(seq 1 300); do
    if ! kill -0 "$HUB_PID" 2>/dev/null; then
        log "the hub exited during start-up; its log: $HUB_LOG"
        tail -n 20 "$HUB_LOG" >&2
        exit 1
    fi
    if curl -fsS --max-time 2 "$BASE/health" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
if ! curl -fsS --max-time 2 "$BASE/health" >/dev/null; then
    log "the hub did not answer /health within 30 s; its log: $HUB_LOG"
    exit 1
fi

# Seed data. Schemathesis finds no producer of event or dead-letter ids in the OpenAPI document
# (it has no links), so without this GET /events/{id}, the attempts list and replay would only
# ever see 404s. The seeded subscription points at an unresolvable host (.invalid, RFC 2606) and
# takes every event type, so each fuzzed publish also ends as a dead letter.
api() {
    curl -fsS --max-time 10 -H "Authorization: Bearer $API_KEY" \
        -H 'Content-Type: application/json' "$@"
}
json_get() { "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
dead_letter_ids() {
    api "$BASE/api/v1/admin/dead-letters" |
        "$VENV/bin/python" -c 'import json, sys; print(*(d["id"] for d in json.load(sys.stdin)["data"]))'
}
toml_list() { printf '"%s", ' "$@" | sed 's/, $//'; }

SEED_EVENTS=3
subscription_id=$(api -X POST "$BASE/api/v1/subscriptions" \
    -d '{"url": "https://fuzz-target.invalid/hook", "secret": "fuzz-api-seed-secret-0123",
         "events": ["*"], "description": "seeded by scripts/fuzz-api.sh",
         "headers": {"X-Fuzz": "1"}}' | json_get id)
event_ids=()
for i in $(seq 1 "$SEED_EVENTS"); do
    event_ids+=("$(api -X POST "$BASE/api/v1/events" \
        -d "{\"event_type\": \"fuzz.seed\", \"payload\": {\"n\": $i}}" | json_get id)")
done
read -r -a dead_letters <<<"$(dead_letter_ids)"
for _ in $(seq 1 200); do
    ((${#dead_letters[@]} >= SEED_EVENTS)) && break
    sleep 0.1
    read -r -a dead_letters <<<"$(dead_letter_ids)"
done
if ((${#dead_letters[@]} < SEED_EVENTS)); then
    log "seeding: the $SEED_EVENTS seeded events did not become dead letters within 20 s; hub log: $HUB_LOG"
    exit 1
fi
cat >"$WORK/schemathesis.toml" <<EOF
# Written by scripts/fuzz-api.sh: real ids, used for half of the generated path parameters.
[dictionaries]
subscription_ids = { values = [$(toml_list "$subscription_id")] }
event_ids = { values = [$(toml_list "${event_ids[@]}")] }
dead_letter_ids = { values = [$(toml_list "${dead_letters[@]}")] }

[[operations]]
include-name = "GET /api/v1/events/{id}"
parameters = { "path.id" = { dictionary = "event_ids", probability = 0.5 } }

[[operations]]
include-name = "GET /api/v1/admin/events/{event_id}/attempts"
parameters = { "path.event_id" = { dictionary = "event_ids", probability = 0.5 } }

[[operations]]
include-name = "POST /api/v1/admin/dead-letters/{id}/replay"
parameters = { "path.id" = { dictionary = "dead_letter_ids", probability = 0.5 } }

[[operations]]
include-name = "GET /api/v1/subscriptions/{id}"
parameters = { "path.id" = { dictionary = "subscription_ids", probability = 0.5 } }

[[operations]]
include-name = "PATCH /api/v1/subscriptions/{id}"
parameters = { "path.id" = { dictionary = "subscription_ids", probability = 0.5 } }
EOF
log "seeded subscription $subscription_id, ${#event_ids[@]} events and ${#dead_letters[@]} dead letters"

st_args=(
    --config-file "$WORK/schemathesis.toml"
    run "$BASE/openapi.json"
    --header "Authorization: Bearer $API_KEY"
    --checks "$CHECKS" --exclude-checks "$EXCLUDED_CHECKS"
    --max-examples "$EXAMPLES"
    --request-timeout 15
    # The live feed is an endless stream by design: nothing to fuzz in a response that never ends.
    --exclude-name "GET /api/v1/feed"
    --report "junit,ndjson" --report-dir "$REPORT_DIR"
    --no-color
)
[[ -n $SEED ]] && st_args+=(--seed "$SEED")
st_args+=("${ST_EXTRA[@]}")

log "st ${st_args[*]/$API_KEY/<key>}"
start=$SECONDS
st_status=0
# schemathesis keeps its example database (.hypothesis, .schemathesis) in the working directory.
# In the background and waited for, so that SIGINT/SIGTERM reach the traps at once.
(cd "$WORK" && exec "$ST" "${st_args[@]}") &
ST_PID=$!
wait "$ST_PID" || st_status=$?
ST_PID=""
log "schemathesis finished in $((SECONDS - start)) s with exit code $st_status"

failed=false
if ((st_status != 0)); then
    log "schemathesis reported failures (reports in $REPORT_DIR)"
    failed=true
fi
if ! kill -0 "$HUB_PID" 2>/dev/null; then
    log "the hub died during the run"
    failed=true
fi
if grep -n 'panicked' "$HUB_LOG" >&2; then
    log "the hub panicked (lines above)"
    failed=true
fi

if $failed; then exit 1; fi
KEEP_WORK=false
log "no failures"
