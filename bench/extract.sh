#!/usr/bin/env bash
# The extract benchmark: 1,000,000 orders from MariaDB (../shared/bench/extract_schema_mariadb.sql)
# to gzip'd text, ours (`sluice extract`, gzip JSON lines in a local lake) beside the mysql
# client streaming the same rows in the same order to gzip'd tab-separated text
# (../shared/bench/peer_mysql_client.sh), back to back. Then the memory comparison: peak RSS of
# `sluice extract` for the table's first 100,000 rows and for all 1,000,000 (flat, not growing).
#
#   bench/extract.sh
#
# Ours runs `sluice extract --pipeline bench/extract.toml --lake DIR --table T` into a fresh
# lake, in incremental mode (the first run of a table reads all of it, in (updated_at, key)
# order, as the peer does) or, with EXTRACT_MODE=historical, `--historical` (key order):
#   rows/s      = 1,000,000 / the process's wall time (connect included)   (target ≥ 0.8 × peer)
#   peak RSS    of `--table bench_orders_100k` (the first 100,000 rows) and of
#               `--table bench_orders` (all 1,000,000)                    (target: ≤ 1.2 × growth)
# Every run is checked: the lake holds exactly the table's rows and its state is complete.
#
# Environment:
#   REPEAT=2                rounds; each runs the peer and ours once, alternating
#   EXTRACT_MODE            incremental (default) or historical
#   SLUICE_BIN=PATH         measure this sluice binary instead of building target/release/sluice
#   SLUICE_BENCH_DIR        where extract_schema_mariadb.sql and peer_mysql_client.sh are
#                           (default: ../shared/bench)
#   SLUICE_BENCH_MYSQL_URL  the MariaDB database (mysql://USER[:PASSWORD]@HOST[:PORT]/DB,
#                           default mysql://root@127.0.0.1:3306/sluice_bench, created and filled
#                           when it lacks the 1,000,000 rows); bench/extract.toml reads it
#   CARGO_TARGET_DIR        honoured when building and locating target/release/sluice
# Outputs live in bench/out/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROWS=1000000
FIRST_ROWS=100000
REPEAT="${REPEAT:-2}"
MODE="${EXTRACT_MODE:-incremental}"
BENCH_DIR="${SLUICE_BENCH_DIR:-$(dirname "$ROOT")/shared/bench}"
export SLUICE_BENCH_MYSQL_URL="${SLUICE_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/sluice_bench}"
OUT="$ROOT/bench/out"
RATIO_TARGET=0.8
RSS_GROWTH_LIMIT=1.2

case "$REPEAT" in '' | *[!0-9]* | 0) echo "REPEAT must be a positive integer" >&2; exit 2 ;; esac
case "$MODE" in
    incremental) mode_args=() ;;
    historical) mode_args=(--historical) ;;
    *) echo "EXTRACT_MODE must be incremental or historical" >&2; exit 2 ;;
esac

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'bench/extract.sh: %s\n' "$*" >&2; exit 1; }

for f in extract_schema_mariadb.sql peer_mysql_client.sh; do
    [ -f "$BENCH_DIR/$f" ] || die "$BENCH_DIR/$f not found (set SLUICE_BENCH_DIR to the shared bench folder)"
done
[ -x /usr/bin/time ] || die "GNU time is missing: run 'apt-get install time' (as root)"
client="$(command -v mariadb || command -v mysql || true)"
[ -n "$client" ] || die "the mariadb (or mysql) client is missing"
mkdir -p "$OUT"

# --- the database URL -----------------------------------------------------------------------
# mysql://USER[:PASSWORD]@HOST[:PORT]/DB → client arguments; the password goes in MYSQL_PWD
# (read by the client and the peer's client), never on a command line.
url_re='^mysql://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?/([A-Za-z0-9_]+)$'
[[ "$SLUICE_BENCH_MYSQL_URL" =~ $url_re ]] ||
    die "SLUICE_BENCH_MYSQL_URL must look like mysql://USER[:PASSWORD]@HOST[:PORT]/DB"
db_user="${BASH_REMATCH[1]}"
db_pass="${BASH_REMATCH[3]}"
db_host="${BASH_REMATCH[4]}"
db_port="${BASH_REMATCH[6]:-3306}"
db="${BASH_REMATCH[7]}"
[ -z "$db_pass" ] || export MYSQL_PWD="$db_pass"
client_args=(-h "$db_host" -P "$db_port" -u "$db_user")
sql() { "$client" "${client_args[@]}" --batch --skip-column-names "$@"; }

# --- our binary -----------------------------------------------------------------------------
if [ -n "${SLUICE_BIN:-}" ]; then
    bin="$SLUICE_BIN"
else
    say "building target/release/sluice"
    cargo build --release --bin sluice
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice"
fi
[ -x "$bin" ] || die "$bin is not an executable"
if ! "$bin" extract --help >"$OUT/extract-help.txt" 2>&1 || ! grep -q -- '--lake' "$OUT/extract-help.txt"; then
    die "$bin has no 'extract' subcommand (sluice extract --pipeline F --lake DIR [--table T] [--historical], issue 11): build a sluice that has it, or point SLUICE_BIN at one"
fi

# --- the database ---------------------------------------------------------------------------
sql -e "CREATE DATABASE IF NOT EXISTS \`$db\`"
have=$(sql "$db" -e "SELECT COUNT(*) FROM bench_orders" 2>/dev/null || echo 0)
if [ "$have" != "$ROWS" ]; then
    say "filling $db.bench_orders with $ROWS rows (extract_schema_mariadb.sql)"
    sql "$db" <"$BENCH_DIR/extract_schema_mariadb.sql"
    have=$(sql "$db" -e "SELECT COUNT(*) FROM bench_orders")
    [ "$have" = "$ROWS" ] || die "bench_orders holds $have rows after the schema file, expected $ROWS"
fi

# --- ours -----------------------------------------------------------------------------------
our_run() { # TABLE EXPECTED_ROWS: one `sluice extract` into a fresh lake; prints "rows wall peak_mb gz_size"
    local table=$1 want=$2 lake="$OUT/extract-lake-$1"
    rm -rf "$lake"
    mkdir -p "$lake"
    /usr/bin/time -f '%e %M' -o "$OUT/extract-time.txt" \
        "$bin" extract --pipeline bench/extract.toml --lake "$lake" --table "$table" "${mode_args[@]}" \
        >"$OUT/extract-ours-$table.log" 2>&1 ||
        { cat "$OUT/extract-ours-$table.log" >&2; die "sluice extract --table $table failed"; }
    local state="$lake/state/extract/$table/main/state.json"
    [ -f "$state" ] || die "$table: no state at $state"
    python3 - "$state" <<'PY' || die "$table: the run did not finish (its range is still open in $state: a deadline?)"
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])).get("run") is None else 1)
PY
    local rows wall peak size
    rows=$(find "$lake/raw/$table" -name 'part-*.jsonl.gz' -print0 | xargs -0 -r zcat | wc -l)
    [ "$rows" -eq "$want" ] || die "$table: the lake holds $rows rows, expected $want"
    read -r wall peak <"$OUT/extract-time.txt"
    size=$(du -sh "$lake/raw" | cut -f1)
    echo "$rows $wall $((peak / 1024)) $size"
}

peer_rates=()
our_rates=()
rss_full=()
rss_first=()
for round in $(seq 1 "$REPEAT"); do
    say "round $round/$REPEAT: mysql client → gzip (peer)"
    peer_line=$("$BENCH_DIR/peer_mysql_client.sh" "$db" "${client_args[@]}" 2>"$OUT/extract-peer.err") ||
        { cat "$OUT/extract-peer.err" >&2; die "the peer failed"; }
    echo "$peer_line"
    peer_rows=$(awk '{print $2}' <<<"$peer_line")
    [ "$peer_rows" -eq "$ROWS" ] || die "the peer read $peer_rows rows, expected $ROWS"
    peer_rates+=("$(awk '{print $8}' <<<"$peer_line")")

    say "round $round/$REPEAT: sluice extract ($MODE), all $ROWS rows"
    # A variable, not `read < <(…)`: a failure inside our_run must stop the script.
    line=$(our_run bench_orders "$ROWS")
    read -r rows wall peak size <<<"$line"
    rate=$(python3 -c "print(int($rows / max($wall, 0.001)))")
    echo "sluice-extract $rows rows in $wall s = $rate rows/s (process wall time, connect included), peak RSS $peak MB, $size gz"
    our_rates+=("$rate")
    rss_full+=("$peak")

    say "round $round/$REPEAT: sluice extract ($MODE), the first $FIRST_ROWS rows"
    line=$(our_run bench_orders_100k "$FIRST_ROWS")
    read -r rows wall peak size <<<"$line"
    echo "sluice-extract $rows rows in $wall s, peak RSS $peak MB, $size gz"
    rss_first+=("$peak")
done

best() { printf '%s\n' "$@" | sort -n | tail -1; }
peer=$(best "${peer_rates[@]}")
ours=$(best "${our_rates[@]}")
peak_full=$(best "${rss_full[@]}")
peak_first=$(best "${rss_first[@]}")
ratio=$(python3 -c "print(round($ours / $peer, 2))")
growth=$(python3 -c "print(round($peak_full / max($peak_first, 1), 2))")

say "results ($ROWS rows, $MODE, best of $REPEAT)"
printf '%-46s %12s %8s\n' "what" "rows/s" "ratio"
printf '%-46s %12s %8s\n' "mysql client --quick | gzip -1 (peer)" "$peer" "1.00"
printf '%-46s %12s %8s\n' "sluice extract (gzip JSON lines)" "$ours" "$ratio"
echo "sluice extract peak RSS: first $FIRST_ROWS rows $peak_first MB; all $ROWS rows $peak_full MB; growth ${growth}x"

status=0
python3 -c "import sys; sys.exit(0 if $ratio >= $RATIO_TARGET else 1)" ||
    { echo "TARGET MISSED: $ratio x < $RATIO_TARGET x the mysql client"; status=1; }
python3 -c "import sys; sys.exit(0 if $growth <= $RSS_GROWTH_LIMIT else 1)" ||
    { echo "TARGET MISSED: peak RSS grows ${growth}x from $FIRST_ROWS to $ROWS rows (limit ${RSS_GROWTH_LIMIT}x)"; status=1; }
exit $status
