#!/usr/bin/env bash
# The transform benchmark: our `sluice transform` beside DuckDB (1 and 2 threads) and
# pyarrow + pandas on the same funnel CSV (see ../shared/bench/README.md), back to back.
#
#   bench/transform.sh [ROWS]          ROWS defaults to 2,000,000 (≈ 276 MB of CSV)
#
# Environment:
#   REPEAT=2           rounds; each round runs ours and every peer once, alternating
#   SKIP_4M=1          skip the extra run of ours on 4,000,000 rows (peak RSS at twice the input)
#   SKIP_OURS=1        peers only (e.g. while the CLI is not built yet)
#   SLUICE_BIN=PATH    measure this sluice binary instead of building target/release/sluice
#   SLUICE_BIN_BEFORE=PATH  also measure this (older) sluice binary, alternating with ours in
#                      every round on the same file: a before/after comparison of a change
#   SLUICE_BENCH_DIR   where gen_funnel.py and the peer_*.py scripts are (default: ../shared/bench)
#   CARGO_TARGET_DIR   honoured when building and locating target/release/sluice
#
# Targets checked (exit 1 when one fails): our best wall time ≤ 0.8 × DuckDB threads=1, and our
# peak RSS ≤ 256 MB at ROWS and at 4,000,000 rows.
# Outputs live in bench/out/ (git-ignored); generated CSVs are kept there and reused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROWS="${1:-2000000}"
REPEAT="${REPEAT:-2}"
BENCH_DIR="${SLUICE_BENCH_DIR:-$(dirname "$ROOT")/shared/bench}"
OUT="$ROOT/bench/out"
WALL_RATIO_TARGET=0.8
RSS_TARGET_MB=256
BIG_ROWS=4000000

case "$ROWS" in '' | *[!0-9]*) echo "usage: bench/transform.sh [ROWS]" >&2; exit 2 ;; esac
case "$REPEAT" in '' | *[!0-9]* | 0) echo "REPEAT must be a positive integer" >&2; exit 2 ;; esac

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'bench/transform.sh: %s\n' "$*" >&2; exit 1; }

for f in gen_funnel.py peer_duckdb.py peer_pyarrow.py; do
    [ -f "$BENCH_DIR/$f" ] || die "$BENCH_DIR/$f not found (set SLUICE_BENCH_DIR to the shared bench folder)"
done
mkdir -p "$OUT"

# --- tools --------------------------------------------------------------------------------
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        say "installing GNU time (apt-get install time)"
        apt-get install -y -q time >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; }
    fi
    [ -x /usr/bin/time ] || die "GNU time is missing: run 'apt-get install time' (as root)"
fi
missing=()
for mod in duckdb pyarrow pandas; do
    python3 -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing peer tools: ${missing[*]}"
    python3 -m pip install --disable-pip-version-check -q "${missing[@]}"
fi
say "peers: $(python3 -c 'import duckdb, pyarrow, pandas; print(f"duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}, pandas {pandas.__version__}")')"

# --- input --------------------------------------------------------------------------------
# Generated once per row count and reused: gen_funnel.py is deterministic (seeded).
ensure_csv() {
    local rows="$1" csv="$OUT/funnel-$1.csv"
    if [ ! -s "$csv" ] || [ "$(($(wc -l <"$csv") - 1))" -ne "$rows" ]; then
        say "generating $rows funnel rows → $csv" >&2
        python3 "$BENCH_DIR/gen_funnel.py" "$rows" "$csv.tmp" || return 1
        mv "$csv.tmp" "$csv" || return 1
    fi
    printf '%s\n' "$csv"
}
CSV="$(ensure_csv "$ROWS")"
say "input: $CSV ($(du -m "$CSV" | cut -f1) MB, $ROWS rows)"

# --- ours ---------------------------------------------------------------------------------
SLUICE=""
if [ -z "${SKIP_OURS:-}" ]; then
    if [ -n "${SLUICE_BIN:-}" ]; then
        SLUICE="$SLUICE_BIN"
    else
        say "cargo build --release -p sluice-cli"
        cargo build --release -p sluice-cli
        TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
        SLUICE="$TARGET_DIR/release/sluice"
    fi
    [ -x "$SLUICE" ] || die "$SLUICE was not built"
    [ -f examples/pipeline.toml ] || die "examples/pipeline.toml is missing"
    [ -s "$OUT/hash.key" ] || head -c 32 /dev/urandom >"$OUT/hash.key"
fi

# run_timed NAME LOG CMD... → runs CMD under GNU time; sets WALL (s), RSS_MB, CPU (%), ROWS_OUT.
run_timed() {
    local name="$1" log="$2" tf rc=0
    shift 2
    tf="$(mktemp)"
    /usr/bin/time -o "$tf" -f '%e %M %P' "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "$name failed (exit $rc); last lines of $log:" >&2
        tail -n 20 "$log" >&2
        rm -f "$tf"
        return 1
    fi
    # GNU time writes "Command exited with non-zero status" lines first on failure; the figures are last.
    read -r WALL RSS_KB CPU <<<"$(tail -n 1 "$tf")"
    rm -f "$tf"
    RSS_MB=$((RSS_KB / 1024))
    CPU="${CPU%\%}"
    if [ "$name" = ours ] || [ "$name" = before ]; then
        ROWS_OUT="$(grep -oE 'rows_(out|written)=[0-9]*' "$log" | tail -n 1 | cut -d= -f2 || true)"
    else
        ROWS_OUT="$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | tr -dc '0-9')"
    fi
    ROWS_OUT="${ROWS_OUT:-?}"
    printf '    %-12s %8ss  %6s MB  %4s%% CPU  rows_out=%s\n' "$name" "$WALL" "$RSS_MB" "$CPU" "$ROWS_OUT"
}

# A fresh lake per run: the CSV copied under raw/funnel/ (the copy is not timed).
run_ours() {
    local csv="$1" bin="${2:-$SLUICE}" name="${3:-ours}" lake="$OUT/lake"
    rm -rf "$lake"
    mkdir -p "$lake/raw/funnel"
    cp "$csv" "$lake/raw/funnel/funnel.csv"
    # One worker thread, as DuckDB threads=1 (the CLI's runtime honours these where it uses them).
    TOKIO_WORKER_THREADS=1 RAYON_NUM_THREADS=1 run_timed "$name" "$OUT/$name.log" \
        "$bin" transform --pipeline examples/pipeline.toml --hash-key-file "$OUT/hash.key" \
        --lake "$lake" raw/funnel/funnel.csv
}

declare -A BEST_WALL BEST_RSS BEST_CPU BEST_ROWS
MAX_RSS_OURS=0
record() {
    local tool="$1"
    if [ -z "${BEST_WALL[$tool]:-}" ] || python3 -c "import sys; sys.exit(0 if $WALL < ${BEST_WALL[$tool]} else 1)"; then
        BEST_WALL[$tool]="$WALL" BEST_RSS[$tool]="$RSS_MB" BEST_CPU[$tool]="$CPU" BEST_ROWS[$tool]="$ROWS_OUT"
    fi
    if [ "$tool" = ours ] && [ "$RSS_MB" -gt "$MAX_RSS_OURS" ]; then MAX_RSS_OURS="$RSS_MB"; fi
}

TOOLS=()
[ -n "$SLUICE" ] && TOOLS+=(ours)
if [ -n "${SLUICE_BIN_BEFORE:-}" ]; then
    [ -x "$SLUICE_BIN_BEFORE" ] || die "SLUICE_BIN_BEFORE=$SLUICE_BIN_BEFORE is not an executable"
    TOOLS+=(before)
fi
TOOLS+=(duckdb-1 duckdb-2 pyarrow)
FAILED_RUNS=()
for round in $(seq 1 "$REPEAT"); do
    say "round $round of $REPEAT ($ROWS rows)"
    for tool in "${TOOLS[@]}"; do
        case "$tool" in
            ours) run_ours "$CSV" ;;
            before) run_ours "$CSV" "$SLUICE_BIN_BEFORE" before ;;
            duckdb-1) run_timed "$tool" "$OUT/$tool.log" python3 "$BENCH_DIR/peer_duckdb.py" "$CSV" "$OUT/peer-duckdb" 1 ;;
            duckdb-2) run_timed "$tool" "$OUT/$tool.log" python3 "$BENCH_DIR/peer_duckdb.py" "$CSV" "$OUT/peer-duckdb" 2 ;;
            pyarrow) run_timed "$tool" "$OUT/$tool.log" python3 "$BENCH_DIR/peer_pyarrow.py" "$CSV" "$OUT/peer-pyarrow" ;;
        esac && record "$tool" || FAILED_RUNS+=("$tool")
    done
done
rm -rf "$OUT/peer-duckdb" "$OUT/peer-pyarrow"

BIG_RSS=""
if [ -n "$SLUICE" ] && [ -z "${SKIP_4M:-}" ]; then
    BIG_CSV="$(ensure_csv "$BIG_ROWS")"
    say "ours on $BIG_ROWS rows (peak RSS)"
    if run_ours "$BIG_CSV"; then
        BIG_RSS="$RSS_MB" BIG_WALL="$WALL" BIG_ROWS_OUT="$ROWS_OUT"
        if [ "$RSS_MB" -gt "$MAX_RSS_OURS" ]; then MAX_RSS_OURS="$RSS_MB"; fi
    else
        FAILED_RUNS+=("ours-4M")
    fi
fi
rm -rf "$OUT/lake"

# --- report -------------------------------------------------------------------------------
say "results: $ROWS rows, best of $REPEAT, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
ref="${BEST_WALL[duckdb-1]:-}"
printf '%-22s %10s %9s %12s %6s %14s\n' tool rows_out wall_s peak_rss_MB cpu_% vs_duckdb-1t
for tool in "${TOOLS[@]}"; do
    label="$tool"
    case "$tool" in
        ours) label="ours (sluice)" ;;
        before) label="ours, before (sluice)" ;;
        duckdb-1) label="duckdb threads=1" ;;
        duckdb-2) label="duckdb threads=2" ;;
        pyarrow) label="pyarrow+pandas" ;;
    esac
    if [ -z "${BEST_WALL[$tool]:-}" ]; then
        printf '%-22s %10s\n' "$label" "FAILED"
        continue
    fi
    ratio="-"
    [ -n "$ref" ] && ratio="$(python3 -c "print(f'{${BEST_WALL[$tool]} / $ref:.2f}x')")"
    printf '%-22s %10s %9s %12s %6s %14s\n' "$label" "${BEST_ROWS[$tool]}" "${BEST_WALL[$tool]}" \
        "${BEST_RSS[$tool]}" "${BEST_CPU[$tool]}" "$ratio"
done
if [ -n "$BIG_RSS" ]; then
    printf '%-22s %10s %9s %12s\n' "ours @ $BIG_ROWS rows" "$BIG_ROWS_OUT" "$BIG_WALL" "$BIG_RSS"
fi

# Every tool should write the same rows (1,960,117 for 2,000,000 generated rows).
distinct_rows="$(for t in "${TOOLS[@]}"; do [ -n "${BEST_ROWS[$t]:-}" ] && echo "${BEST_ROWS[$t]}"; done | sort -u | wc -l)"
[ "$distinct_rows" -le 1 ] || echo "WARNING: the tools disagree on rows out"
[ "${#FAILED_RUNS[@]}" -eq 0 ] || echo "WARNING: failed runs: ${FAILED_RUNS[*]}"

status=0
if [ -z "$SLUICE" ]; then
    echo "targets: not checked (SKIP_OURS)"
else
    if [ -n "${BEST_WALL[ours]:-}" ] && [ -n "$ref" ]; then
        limit="$(python3 -c "print(f'{$ref * $WALL_RATIO_TARGET:.2f}')")"
        if python3 -c "import sys; sys.exit(0 if ${BEST_WALL[ours]} <= $limit else 1)"; then
            echo "PASS wall: ours ${BEST_WALL[ours]}s <= ${WALL_RATIO_TARGET} x duckdb threads=1 ($limit s)"
        else
            echo "FAIL wall: ours ${BEST_WALL[ours]}s > ${WALL_RATIO_TARGET} x duckdb threads=1 ($limit s)"
            status=1
        fi
    else
        echo "FAIL wall: no successful run of ours or of duckdb threads=1 to compare"
        status=1
    fi
    if [ -z "${BEST_WALL[ours]:-}" ]; then
        echo "FAIL rss: no successful run of ours"
        status=1
    elif [ "$MAX_RSS_OURS" -le "$RSS_TARGET_MB" ]; then
        echo "PASS rss: ours peak ${MAX_RSS_OURS} MB <= ${RSS_TARGET_MB} MB (highest over every run${BIG_RSS:+, incl. $BIG_ROWS rows})"
    else
        echo "FAIL rss: ours peak ${MAX_RSS_OURS} MB > ${RSS_TARGET_MB} MB (highest over every run${BIG_RSS:+, incl. $BIG_ROWS rows})"
        status=1
    fi
fi
exit "$status"
