#!/usr/bin/env bash
# A throwaway moto_server (local AWS APIs: S3, Glue, Kinesis, Secrets Manager, Redshift Data,
# EventBridge) on a free loopback port.
#
# Sourced (`. scripts/moto.sh`), it defines:
#   moto_start LOGFILE  start one; sets MOTO_PID, MOTO_PORT and MOTO_ENDPOINT (http://127.0.0.1:PORT)
#                       and returns once it answers HTTP; non-zero if it did not within 30 s
#   moto_stop           stop the one moto_start started (TERM, then KILL after 5 s); safe to call twice
# Run directly (`scripts/moto.sh`), it starts one in the foreground, prints its endpoint and the
# environment to use, and stops it on Ctrl-C.
#
# The server runs in its own session/process group (setsid), so stopping it takes whatever it
# spawned with it, and nothing else.

MOTO_STARTUP_TIMEOUT="${MOTO_STARTUP_TIMEOUT:-30}"

# A port the kernel just handed out on 127.0.0.1, free at the time of asking.
# shellcheck source=scripts/proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"


# Waits until http://127.0.0.1:$2 answers anything, while process $1 is alive.
# 0: answered; 1: the process exited; 2: timed out.
_moto_wait_ready() {
    python3 - "$1" "$2" "$MOTO_STARTUP_TIMEOUT" <<'PY'
import sys, time, urllib.request, urllib.error
pid, port, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])

def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")  # an exited, not yet reaped child is a zombie
    except FileNotFoundError:
        return False

deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    if not alive():
        sys.exit(1)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2).read()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # any HTTP answer means it is serving
    except OSError:
        time.sleep(0.1)
sys.exit(2)
PY
}

moto_start() {
    local log="${1:?moto_start LOGFILE}" attempt rc
    command -v setsid >/dev/null || { echo "moto.sh: setsid (util-linux) is missing" >&2; return 1; }
    python3 -c 'import moto.server, flask' 2>/dev/null || {
        echo "moto.sh: moto[server] is not installed (pip install -r scripts/requirements-test.txt)" >&2
        return 1
    }
    # The port is picked, released, then bound by moto: another process may take it in between,
    # so a failed start on "address in use" is retried on a new port.
    for attempt in 1 2 3; do
        MOTO_PORT="$(free_port)"
        # Not a process-group leader (no job control in scripts), so setsid execs in place and
        # $! is the server itself: the leader of its own new process group.
        setsid python3 -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >>"$log" 2>&1 </dev/null &
        MOTO_PID=$!
        rc=0
        _moto_wait_ready "$MOTO_PID" "$MOTO_PORT" || rc=$?
        if [ "$rc" -eq 0 ]; then
            MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
            export MOTO_PID MOTO_PORT MOTO_ENDPOINT
            return 0
        fi
        if [ "$rc" -eq 2 ]; then
            echo "moto.sh: moto_server (pid $MOTO_PID) did not answer on port $MOTO_PORT within ${MOTO_STARTUP_TIMEOUT}s; log: $log" >&2
            moto_stop
            return 1
        fi
        wait "$MOTO_PID" 2>/dev/null || true
        MOTO_PID=""
        if ! grep -qi 'address already in use' "$log"; then
            echo "moto.sh: moto_server exited at start; log ($log):" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        echo "moto.sh: port $MOTO_PORT was taken meanwhile (attempt $attempt), trying another" >&2
    done
    return 1
}


moto_stop() {
    local pid="${MOTO_PID:-}" _
    [ -n "$pid" ] || return 0
    MOTO_PID=""
    if pid_running "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            pid_running "$pid" || break
            sleep 0.1
        done
        if pid_running "$pid"; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    log="$(mktemp "${TMPDIR:-/tmp}/moto.XXXXXX.log")"
    trap 'moto_stop; echo "moto stopped (log: $log)"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    moto_start "$log"
    cat <<EOF
moto_server pid $MOTO_PID listening on $MOTO_ENDPOINT (log: $log)
  export SLUICE_TEST_AWS_ENDPOINT=$MOTO_ENDPOINT AWS_ENDPOINT_URL=$MOTO_ENDPOINT
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
Ctrl-C stops it.
EOF
    wait "$MOTO_PID" || true
fi
