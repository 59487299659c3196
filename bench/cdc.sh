#!/usr/bin/env bash
# The CDC benchmark: the workload of ../shared/bench/cdc_workload.sql (200,000 changes in 20
# transactions) decoded from a logical replication slot to JSON on the client, ours (pgoutput,
# decoded by `sluice cdc peek`) beside wal2json (../shared/bench/peer_wal2json.sh), both
# peeking, neither sending to Kinesis. Then the memory test of one large transaction: a single
# transaction of 200,000 changes and one of 20,000 through `sluice cdc peek`, peak RSS of each.
#
#   bench/cdc.sh
#
# It starts a throwaway PostgreSQL cluster with wal_level = logical (scripts/databases.sh) and
# installs Debian's postgresql-15-wal2json when it is missing (needs root or sudo).
#
# Environment:
#   REPEAT=2            rounds of the peer and ours, alternating
#   SLUICE_BIN=PATH     measure this sluice binary instead of building target/release/sluice
#   SLUICE_BENCH_DIR    where cdc_schema.sql, cdc_workload.sql and peer_wal2json.sh are
#                       (default: ../shared/bench)
#   CARGO_TARGET_DIR    honoured when building and locating target/release/sluice
# Outputs live in bench/out/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REPEAT="${REPEAT:-2}"
BENCH_DIR="${SLUICE_BENCH_DIR:-$(dirname "$ROOT")/shared/bench}"
OUT="$ROOT/bench/out"
RATIO_TARGET=1.5
RSS_LIMIT_MB=256
RSS_GROWTH_LIMIT=1.2

case "$REPEAT" in '' | *[!0-9]* | 0) echo "REPEAT must be a positive integer" >&2; exit 2 ;; esac

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'bench/cdc.sh: %s\n' "$*" >&2; exit 1; }

for f in cdc_schema.sql cdc_workload.sql peer_wal2json.sh; do
    [ -f "$BENCH_DIR/$f" ] || die "$BENCH_DIR/$f not found (set SLUICE_BENCH_DIR to the shared bench folder)"
done
[ -x /usr/bin/time ] || die "GNU time is missing: run 'apt-get install time' (as root)"
mkdir -p "$OUT"

# --- wal2json -------------------------------------------------------------------------------
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -n "$pg_bin" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
pg_major="$(basename "$(dirname "$pg_bin")")"
if [ ! -f "/usr/lib/postgresql/$pg_major/lib/wal2json.so" ]; then
    say "installing postgresql-$pg_major-wal2json"
    sudo_="" ; [ "$(id -u)" -eq 0 ] || sudo_=sudo
    $sudo_ apt-get install -y -q "postgresql-$pg_major-wal2json" >"$OUT/cdc-apt.log" 2>&1 ||
        { $sudo_ apt-get update -q >>"$OUT/cdc-apt.log" 2>&1 &&
          $sudo_ apt-get install -y -q "postgresql-$pg_major-wal2json" >>"$OUT/cdc-apt.log" 2>&1; } ||
        { tail -20 "$OUT/cdc-apt.log" >&2; die "could not install postgresql-$pg_major-wal2json"; }
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

# --- a throwaway cluster with wal_level = logical -----------------------------------------
WORK="$(mktemp -d /tmp/sluice-cdc-bench.XXXXXX)"
chmod 711 "$WORK"
# shellcheck source=scripts/databases.sh
. "$ROOT/scripts/databases.sh"
trap 'pg_logical_stop >/dev/null 2>&1; rm -rf "$WORK"' EXIT
say "starting a logical-replication cluster"
pg_logical_start "$WORK/pg" "$WORK/pg.log" || die "the cluster did not start"
URL="$SLUICE_TEST_PG_LOGICAL_URL"
psql_=(psql -X -q -v ON_ERROR_STOP=1 "$URL")
peer_args=(-h 127.0.0.1 -p "$PG_LOGICAL_PORT" -U postgres -d postgres)

# Ours: a pgoutput slot on a publication of every table, so the peer's DROP/CREATE of the
# table (cdc_schema.sql) keeps it published. Created before the workload runs.
our_slot() {
    "${psql_[@]}" -c "DROP PUBLICATION IF EXISTS bench_pub" \
        -c "SELECT pg_drop_replication_slot('bench_sluice') FROM pg_replication_slots WHERE slot_name = 'bench_sluice'" \
        -c "CREATE PUBLICATION bench_pub FOR ALL TABLES" \
        -c "SELECT pg_create_logical_replication_slot('bench_sluice', 'pgoutput')" >/dev/null
}
our_peek() { # LABEL: decode our slot to JSON lines, prints "changes seconds peak_mb"
    /usr/bin/time -f '%e %M' -o "$OUT/cdc-time.txt" \
        "$bin" cdc peek --source-url "$URL" --slot bench_sluice --publication bench_pub \
        --out "$OUT/cdc-ours.jsonl" >"$OUT/cdc-ours-$1.log" 2>&1 ||
        { cat "$OUT/cdc-ours-$1.log" >&2; die "sluice cdc peek failed"; }
    local changes wall peak
    changes=$(grep -c '"op":"[cud]"' "$OUT/cdc-ours.jsonl" || true)
    read -r wall peak <"$OUT/cdc-time.txt"
    echo "$changes $wall $((peak / 1024))"
}

peer_rates=()
our_rates=()
for round in $(seq 1 "$REPEAT"); do
    say "round $round/$REPEAT: wal2json (peer), then ours on the same workload"
    "${psql_[@]}" -f "$BENCH_DIR/cdc_schema.sql" >/dev/null 2>&1
    our_slot
    peer_line=$("$BENCH_DIR/peer_wal2json.sh" "${peer_args[@]}" 2>"$OUT/cdc-peer.err") ||
        { cat "$OUT/cdc-peer.err" >&2; die "the peer failed"; }
    echo "$peer_line"
    peer_changes=$(awk '{print $2}' <<<"$peer_line")
    [ "$peer_changes" -eq 200000 ] || die "wal2json decoded $peer_changes changes, expected 200000"
    peer_rates+=("$(awk '{print $(NF-3)}' <<<"$peer_line")")
    read -r changes wall peak < <(our_peek "round$round")
    [ "$changes" -eq 200000 ] || die "sluice decoded $changes changes, expected 200000"
    rate=$(python3 -c "print(int($changes / max($wall, 0.001)))")
    echo "sluice $changes changes in $wall s = $rate changes/s (process wall time, connect included), peak RSS $peak MB"
    our_rates+=("$rate")
    "${psql_[@]}" -c "SELECT pg_drop_replication_slot('bench_sluice')" >/dev/null
done

# --- one large transaction: memory stays flat ---------------------------------------------
one_tx() { # N: peak RSS (MB) of decoding one transaction of N inserts
    "${psql_[@]}" -f "$BENCH_DIR/cdc_schema.sql" >/dev/null 2>&1
    our_slot
    "${psql_[@]}" -c "INSERT INTO bench_cdc (id, name, amount, payload, tags, updated_at)
        SELECT g, 'customer ' || g || ' Zoë', (g % 100000) / 100.0,
               jsonb_build_object('city', 'Oslo', 'zip', lpad((g % 9999)::text, 4, '0'), 'n', g),
               ARRAY['a', 'b' || (g % 7)], timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
        FROM generate_series(1, $1) g" >/dev/null
    local changes wall peak
    read -r changes wall peak < <(our_peek "tx$1")
    [ "$changes" -eq "$1" ] || die "one transaction of $1: decoded $changes changes"
    "${psql_[@]}" -c "SELECT pg_drop_replication_slot('bench_sluice')" >/dev/null
    echo "$peak $wall"
}
say "one transaction of 20,000 changes, then one of 200,000"
read -r rss_small wall_small < <(one_tx 20000)
read -r rss_large wall_large < <(one_tx 200000)

best() { printf '%s\n' "$@" | sort -n | tail -1; }
peer=$(best "${peer_rates[@]}")
ours=$(best "${our_rates[@]}")
ratio=$(python3 -c "print(round($ours / $peer, 2))")
growth=$(python3 -c "print(round($rss_large / max($rss_small, 1), 2))")

say "results (200,000 changes, best of $REPEAT)"
printf '%-44s %12s %8s\n' "what" "changes/s" "ratio"
printf '%-44s %12s %8s\n' "wal2json format-version 2 (peer)" "$peer" "1.00"
printf '%-44s %12s %8s\n' "sluice cdc peek (pgoutput → JSON events)" "$ours" "$ratio"
echo "one transaction: 20,000 changes peak RSS $rss_small MB ($wall_small s); 200,000 changes peak RSS $rss_large MB ($wall_large s); growth ${growth}x"

status=0
python3 -c "import sys; sys.exit(0 if $ratio >= $RATIO_TARGET else 1)" ||
    { echo "TARGET MISSED: $ratio x < $RATIO_TARGET x wal2json"; status=1; }
[ "$rss_large" -le "$RSS_LIMIT_MB" ] || { echo "TARGET MISSED: peak RSS $rss_large MB > $RSS_LIMIT_MB MB"; status=1; }
python3 -c "import sys; sys.exit(0 if $growth <= $RSS_GROWTH_LIMIT else 1)" ||
    { echo "TARGET MISSED: peak RSS grows ${growth}x from 20,000 to 200,000 changes (limit ${RSS_GROWTH_LIMIT}x)"; status=1; }
exit $status
