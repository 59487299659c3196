#!/usr/bin/env bash
# The load benchmark: `sluice load` into PostgreSQL beside psql's `\copy` of the same rows as
# CSV (../shared/bench/peer_psql_copy.sh), back to back.
#
#   bench/load.sh [ROWS]          ROWS defaults to 1,000,000 (../shared/bench/gen_orders.py)
#
# The orders CSV is transformed once into curated Parquet (bench/orders.toml, table
# bench_orders); each round then loads that batch into an empty final table with
# `sluice load --target postgres://…` and reads the load's record (loads/bench_orders/*.json):
#   staging COPY rows/s = rows staged / the COPY steps' time      (target ≥ 1.0 × \copy)
#   whole merge rows/s  = rows staged / the load transaction's time (target ≥ 0.5 × \copy)
#   peak RSS of the sluice process.
#
# Environment:
#   REPEAT=2            rounds; each runs the peer and ours once, alternating
#   SLUICE_BIN=PATH     measure this sluice binary instead of building target/release/sluice
#   SLUICE_BENCH_DIR    where gen_orders.py and peer_psql_copy.sh are (default: ../shared/bench)
#   SLUICE_BENCH_PG_URL the PostgreSQL database both load into
#                       (default postgres://postgres@127.0.0.1:5432/sluice_bench, created if missing)
#   CARGO_TARGET_DIR    honoured when building and locating target/release/sluice
# Outputs live in bench/out/ (git-ignored); the generated CSV is kept there and reused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROWS="${1:-1000000}"
REPEAT="${REPEAT:-2}"
BENCH_DIR="${SLUICE_BENCH_DIR:-$(dirname "$ROOT")/shared/bench}"
PG_URL="${SLUICE_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/sluice_bench}"
OUT="$ROOT/bench/out"
COPY_RATIO_TARGET=1.0
MERGE_RATIO_TARGET=0.5

case "$ROWS" in '' | *[!0-9]*) echo "usage: bench/load.sh [ROWS]" >&2; exit 2 ;; esac
case "$REPEAT" in '' | *[!0-9]* | 0) echo "REPEAT must be a positive integer" >&2; exit 2 ;; esac

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'bench/load.sh: %s\n' "$*" >&2; exit 1; }

for f in gen_orders.py peer_psql_copy.sh; do
    [ -f "$BENCH_DIR/$f" ] || die "$BENCH_DIR/$f not found (set SLUICE_BENCH_DIR to the shared bench folder)"
done
[ -x /usr/bin/time ] || die "GNU time is missing: run 'apt-get install time' (as root)"
command -v psql >/dev/null || die "psql is missing"
mkdir -p "$OUT"

# --- the database ---------------------------------------------------------------------------
db="${PG_URL##*/}"
db="${db%%\?*}"
admin="${PG_URL%/*}/postgres"
if [ "$(psql -X -Atq "$admin" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    say "creating database $db"
    psql -X -q "$admin" -c "CREATE DATABASE \"$db\""
fi

# --- our binary -----------------------------------------------------------------------------
if [ -n "${SLUICE_BIN:-}" ]; then
    bin="$SLUICE_BIN"
else
    say "building target/release/sluice"
    cargo build --release --bin sluice
    bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice"
fi
[ -x "$bin" ] || die "$bin is not an executable"

# --- the data -------------------------------------------------------------------------------
csv="$OUT/orders-$ROWS.csv"
if [ ! -s "$csv" ]; then
    say "generating $ROWS orders"
    python3 "$BENCH_DIR/gen_orders.py" "$ROWS" "$csv.tmp"
    mv "$csv.tmp" "$csv"
fi
lake="$OUT/load-lake-$ROWS"
if [ ! -d "$lake/manifests/bench_orders" ]; then
    say "transforming the orders into curated Parquet (once)"
    rm -rf "$lake"
    mkdir -p "$lake/raw/bench_orders"
    cp "$csv" "$lake/raw/bench_orders/orders.csv"
    "$bin" transform --pipeline bench/orders.toml --lake "$lake" raw/bench_orders/orders.csv >"$OUT/load-transform.log" 2>&1 ||
        { cat "$OUT/load-transform.log" >&2; die "the transform failed"; }
fi

# --- rounds ---------------------------------------------------------------------------------
peer_rates=()
copy_rates=()
merge_rates=()
rss=()
for round in $(seq 1 "$REPEAT"); do
    say "round $round/$REPEAT: psql \\copy"
    peer_line=$("$BENCH_DIR/peer_psql_copy.sh" "$csv" "$PG_URL" 2>"$OUT/load-peer.err") ||
        { cat "$OUT/load-peer.err" >&2; die "the peer failed"; }
    echo "$peer_line"
    peer_rates+=("$(awk '{print $(NF-1)}' <<<"$peer_line")")
    psql -X -q "$PG_URL" -c "DROP TABLE IF EXISTS bench_orders_load"

    say "round $round/$REPEAT: sluice load"
    psql -X -q "$PG_URL" -c "DROP SCHEMA IF EXISTS sluice_bench CASCADE" 2>/dev/null
    rm -rf "$lake/loads" "$lake/state"
    /usr/bin/time -f '%e %M' -o "$OUT/load-time.txt" \
        "$bin" load --pipeline bench/orders.toml --lake "$lake" --table bench_orders --target "$PG_URL" \
        >"$OUT/load-ours.log" 2>&1 || { cat "$OUT/load-ours.log" >&2; die "sluice load failed"; }
    record=$(ls "$lake"/loads/bench_orders/*.json | head -1)
    read -r staged copy_ms run_ms mismatch < <(python3 - "$record" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["counts"]["staged"], r["copy_ms"], r["run_ms"], "none" if r["mismatch"] is None else "MISMATCH")
PY
)
    [ "$staged" -eq "$ROWS" ] || die "staged $staged rows, expected $ROWS"
    [ "$mismatch" = none ] || die "reconciliation mismatch: see $record"
    in_table=$(psql -X -Atq "$PG_URL" -c "SELECT count(*) FROM sluice_bench.bench_orders")
    [ "$in_table" -eq "$ROWS" ] || die "the final table holds $in_table rows, expected $ROWS"
    read -r wall peak_kb <"$OUT/load-time.txt"
    c=$(python3 -c "print(int($staged / max($copy_ms, 1) * 1000))")
    m=$(python3 -c "print(int($staged / max($run_ms, 1) * 1000))")
    echo "sluice-load $staged rows: COPY $copy_ms ms = $c rows/s; whole merge $run_ms ms = $m rows/s; process $wall s, peak RSS $((peak_kb / 1024)) MB"
    copy_rates+=("$c")
    merge_rates+=("$m")
    rss+=("$((peak_kb / 1024))")
done
psql -X -q "$PG_URL" -c "DROP SCHEMA IF EXISTS sluice_bench CASCADE" 2>/dev/null

best() { printf '%s\n' "$@" | sort -n | tail -1; }
peer=$(best "${peer_rates[@]}")
copy=$(best "${copy_rates[@]}")
merge=$(best "${merge_rates[@]}")
peak=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
copy_ratio=$(python3 -c "print(round($copy / $peer, 2))")
merge_ratio=$(python3 -c "print(round($merge / $peer, 2))")

say "results ($ROWS rows, best of $REPEAT)"
printf '%-34s %12s %8s\n' "what" "rows/s" "vs \\copy"
printf '%-34s %12s %8s\n' "psql \\copy (CSV, peer)" "$peer" "1.00"
printf '%-34s %12s %8s\n' "sluice staging COPY (Parquet)" "$copy" "$copy_ratio"
printf '%-34s %12s %8s\n' "sluice whole merge (one tx)" "$merge" "$merge_ratio"
echo "sluice load peak RSS: $peak MB"

status=0
python3 -c "import sys; sys.exit(0 if $copy_ratio >= $COPY_RATIO_TARGET else 1)" ||
    { echo "TARGET MISSED: staging COPY $copy_ratio x < $COPY_RATIO_TARGET x"; status=1; }
python3 -c "import sys; sys.exit(0 if $merge_ratio >= $MERGE_RATIO_TARGET else 1)" ||
    { echo "TARGET MISSED: whole merge $merge_ratio x < $MERGE_RATIO_TARGET x"; status=1; }
exit $status
