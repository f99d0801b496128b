#!/usr/bin/env bash
# Where herzog's time goes at scale: the scale benchmark (1,000 workers × 8 slots, 1,000,000
# fragments, no restart) with herzog built with line tables, perf attached to herzog for 20 s
# of steady state, classified by bench/profile/classify_herzog.py.
#
#   bench/profile/scale.sh [WORKERS] [FRAGMENTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
workers=${1:-1000}
fragments=${2:-1000000}
work=${HERZOG_BENCH_DIR:-/tmp/herzog-bench}
prof=$work/target-prof
CARGO_TARGET_DIR=$prof CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p cli -p herzog -p bench >&2
log=$work/profile-scale.err
"$prof/release/bench" --no-build scale --workers "$workers" --fragments "$fragments" --no-restart >/dev/null 2>"$log" &
bench=$!
until grep -q submitted "$log"; do sleep 1; done
sleep 10
pid=$(pgrep -f "$prof/release/herzog --tls" | head -1)
before=$(grep -o 'acks= *[0-9]*' "$log" | tail -1 | tr -dc 0-9)
perf record -F 499 --call-graph dwarf,8192 -p "$pid" -o "$work/scale.perf" -- sleep 20 >&2
after=$(grep -o 'acks= *[0-9]*' "$log" | tail -1 | tr -dc 0-9)
perf script -i "$work/scale.perf" -F comm,period,ip,sym 2>/dev/null > "$work/scale.script"
python3 bench/profile/classify_herzog.py "$work/scale.script" $((after - before))
wait "$bench" || true
