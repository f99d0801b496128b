#!/usr/bin/env bash
# herzog's benchmark suite (issue 6): builds the release binaries and runs every benchmark;
# the results (markdown tables) go to stdout, progress to stderr. BENCHMARKS.md explains them.
#
#   bench/run.sh            noop, sleep and cpu against xargs -P2 (3 interleaved repetitions
#                           after a warm-up), then the coordinator scale sweep (10k → 1M
#                           fragments at 1,000 workers × 8 slots, 10 → 1,000 workers at 100k):
#                           about 20 minutes on 2 cores, most of it the 1,000,000-fragment run
#   bench/run.sh --smoke    every benchmark at tiny sizes, once: proves they run (CI; not timed)
#   bench/run.sh ARGS...    anything else is passed to `bench all`, e.g. --reps 5 or
#                           --sweep-max-fragments 100000 (skips the 1,000,000-fragment run)
#
# Scratch space: $HERZOG_BENCH_DIR (default /tmp/herzog-bench). Inputs are created once and
# reused (the scale run's are 1,000,000 empty files: a million inodes, no data); state
# directories are removed after each run.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
cargo build --release -p bench -p cli -p herzog >&2

if [ "${1:-}" = "--smoke" ]; then
    shift
    exec target/release/bench --no-build smoke "$@"
fi
exec target/release/bench --no-build all --sweep "$@"
