#!/usr/bin/env python3
"""A/B of two `hz` builds against xargs -P2 -n1 on the same inputs, interleaved.

    bench/ab.py OLD_HZ NEW_HZ INPUT_DIR PROGRAM [REPS]

One unrecorded warm-up round, then REPS rounds of xargs, old `hz local`, new `hz local`
(fresh state directories). Prints wall time and CPU time (user + system of the whole process
tree, programs included) and the medians. Used for BENCHMARKS.md's comparison with the code
before issue 6's fixes: build the old commit into its own target directory
(`git archive <commit> | tar -x -C DIR`, `CARGO_TARGET_DIR=... cargo build --release -p cli`).
"""
import os
import resource
import statistics
import subprocess
import sys
import time

old_hz, new_hz, inputs, prog = sys.argv[1:5]
reps = int(sys.argv[5]) if len(sys.argv) > 5 else 3
hz = {"old": old_hz, "new": new_hz}
scratch = os.path.join(os.environ.get("HERZOG_BENCH_DIR", "/tmp/herzog-bench"), f"ab-states-{time.time_ns()}")
os.makedirs(scratch)
results = {k: [] for k in ["xargs", "old", "new"]}


def run(cmd, shell=False):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


n = 0
for rep in range(reps + 1):
    for k in ["xargs", "old", "new"]:
        if k == "xargs":
            # The bench's scripts write to $HERZOG_OUTPUT_DIR under hz and to $BENCH_OUT
            # under xargs (bench/src/workloads.rs): give the baseline a directory of its own.
            out = f"{scratch}/xargs-out-{rep}"
            os.makedirs(out)
            os.environ["BENCH_OUT"] = out
            r = run(f"find '{inputs}' -type f | sort | xargs -P2 -n1 '{prog}'", shell=True)
        else:
            n += 1
            r = run([hz[k], "local", inputs, prog, "--slots", "2", "--state-dir", f"{scratch}/s{n}-{k}"])
        if rep > 0:
            results[k].append(r)
        print(rep, k, "%.3f s wall, %.3f s cpu" % r, flush=True)
for k, v in results.items():
    print(k, "median wall %.3f s, median cpu %.3f s" % (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)))
base = statistics.median(x[0] for x in results["xargs"])
for k in ["old", "new"]:
    paired = ["%.3f" % (a[0] / b[0]) for a, b in zip(results[k], results["xargs"])]
    print(k, "ratio %.3fx" % (statistics.median(x[0] for x in results[k]) / base), "paired", paired)
