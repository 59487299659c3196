#!/usr/bin/env bash
# Checks that an interrupted scripts/test leaves nothing behind. It starts scripts/test in a
# process group of its own (as a terminal runs a foreground job), waits until a step has begun
# (by default the cargo build), sends the signal to the whole group (SIGINT is what Ctrl-C
# does), and checks that:
#   - scripts/test exited with 128 + the signal's number,
#   - no process of the logical-replication cluster's data directory is left (pgrep -f DATADIR),
#     and the directory is gone,
#   - the run's databases are dropped on PostgreSQL and MariaDB,
#   - moto_server is stopped,
#   - no Lambda emulator of the tests is left (`cargo lambda watch --only-lambda-apis`; run
#     with STEP-REGEX 'cargo nextest run' to interrupt while the Lambda tests run).
#
#   scripts/check-interrupt.sh [INT|TERM] [STEP-REGEX]    e.g. scripts/check-interrupt.sh TERM 'cargo clippy'
#
# Honours CARGO_TARGET_DIR (passed on to scripts/test). Exits 0 when every check holds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIGNAL="${1:-INT}"
AT="${2:-cargo build}"
case "$SIGNAL" in INT) want_rc=130 ;; TERM) want_rc=143 ;; *) echo "signal INT or TERM, not $SIGNAL" >&2; exit 2 ;; esac

log="$(mktemp "${TMPDIR:-/tmp}/check-interrupt.XXXXXX.log")"
echo "check-interrupt: scripts/test output in $log"
# Default dispositions for INT and TERM (a shell without job control starts background jobs
# with SIGINT ignored, which the script could not trap), and a process group of its own.
python3 -c 'import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])' "$ROOT/scripts/test" >"$log" 2>&1 </dev/null &
pid=$!

deadline=$((SECONDS + 1800))
until grep -qE "==> .*$AT" "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "check-interrupt: scripts/test ended before the step '$AT'; last lines:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || { echo "check-interrupt: step '$AT' did not begin within 30 min" >&2; kill -TERM -- "-$pid"; exit 1; }
    sleep 0.5
done
sleep 1 # into the step
datadir="$(sed -nE 's/.*SLUICE_TEST_PG_LOGICAL_URL=.* data ([^)]+)\).*/\1/p' "$log" | head -n 1)"
run_db="$(sed -nE 's|.*SLUICE_TEST_PG_URL=postgres://[^/]+/([a-z0-9_]+).*|\1|p' "$log" | head -n 1)"
moto_pid="$(sed -nE 's/^ +pid ([0-9]+), http.*/\1/p' "$log" | head -n 1)"
[ -n "$datadir" ] && [ -n "$run_db" ] && [ -n "$moto_pid" ] || {
    echo "check-interrupt: could not read the data dir, database or moto pid from $log" >&2
    exit 1
}
echo "check-interrupt: during '$AT': cluster $datadir ($(pgrep -f -- "$datadir" | wc -l) postmaster), database $run_db, moto pid $moto_pid"

echo "check-interrupt: kill -$SIGNAL -- -$pid during: $(grep -E '==> ' "$log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g')"
kill "-$SIGNAL" -- "-$pid"
rc=0
for _ in $(seq 1 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    echo "check-interrupt: scripts/test still runs 2 min after the signal" >&2
    exit 1
fi
wait "$pid" || rc=$?

fail=0
check() { # DESCRIPTION COMMAND...
    local what="$1"
    shift
    if "$@"; then echo "  ok    $what"; else echo "  FAIL  $what"; fail=1; fi
}
check "scripts/test exited $want_rc (got $rc)" test "$rc" -eq "$want_rc"
# (Functions, not `bash -c`: a wrapper's own command line would name the data directory.)
no_cluster_process() { ! pgrep -af -- "$datadir"; }
pg_db_gone() {
    [ -z "$(psql -X -w -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$run_db'")" ]
}
mariadb_db_gone() {
    [ -z "$(mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -u root -N -B -e "SHOW DATABASES LIKE '$run_db'")" ]
}
moto_gone() { ! kill -0 "$moto_pid" 2>/dev/null; }
# Any emulator counts: none of this machine's other work runs one with these flags.
no_lambda_watch() { ! pgrep -af -- "lambda watch --only-lambda-apis"; }
check "no process of $datadir (pgrep -f)" no_cluster_process
check "$datadir deleted" test ! -e "$datadir"
check "PostgreSQL database $run_db dropped" pg_db_gone
check "MariaDB database $run_db dropped" mariadb_db_gone
check "moto_server (pid $moto_pid) stopped" moto_gone
check "no cargo lambda watch left" no_lambda_watch
echo "--- the end of scripts/test's output ---"
tail -n 8 "$log"
if [ "$fail" -eq 0 ]; then
    echo "check-interrupt: PASS (SIG$SIGNAL during '$AT')"
    rm -f "$log"
else
    echo "check-interrupt: FAIL (SIG$SIGNAL during '$AT'); output kept in $log" >&2
    exit 1
fi
