#!/usr/bin/env bash
# Where the time goes per fragment: `hz local` on the noop inputs under perf, with DWARF call
# graphs, classified by bench/profile/classify_noop.py (BENCHMARKS.md shows the result).
#
#   bench/profile/noop.sh [FILES]      default 5000; needs perf and python3
#
# hz is built into a separate target directory with line tables (the shipped release profile
# has no debug info), so the workspace's own target/ is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
files=${1:-5000}
work=${HERZOG_BENCH_DIR:-/tmp/herzog-bench}
prof=$work/target-prof
CARGO_TARGET_DIR=$prof CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p cli -p bench >&2
# The bench creates (or reuses) the inputs; one tiny run is enough for that.
"$prof/release/bench" --no-build noop --files "$files" --reps 1 --warmup 0 >/dev/null
state=$(mktemp -d "$work/profile-state.XXXXXX")
perf record -F 999 --call-graph dwarf,8192 -o "$work/noop.perf" -- \
    "$prof/release/hz" local "$work/inputs/noop-$files" /bin/true --slots 2 --state-dir "$state/run" >&2
perf script -i "$work/noop.perf" -F comm,period,ip,sym 2>/dev/null > "$work/noop.script"
python3 bench/profile/classify_noop.py "$work/noop.script" "$files"
echo "raw: perf report -i $work/noop.perf --no-children --sort dso,sym" >&2
