#!/usr/bin/env bash
# hz run against its baselines in the same run (BENCHMARKS.md, "hz run"): starts herzog and one
# kinski (release builds, mutual TLS on loopback, a temp state dir), then
#   latency:    N × `hz run -- true`            vs N × `sh -c true` here (median wall)
#   throughput: `hz run -- head -c SIZE /dev/zero` into a pipe
#               vs `head -c SIZE /dev/zero | cat` here (wall, MB/s, ratio)
#
#   bench/job.sh [N] [SIZE_MB]      defaults: 20 calls, 1024 MB
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
SIZE_MB=${2:-1024}
export CARGO_TERM_COLOR=never
cargo build --release -p cli -p herzog -p kinski >&2
bin=$PWD/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/herzog" certs init --dir "$work/pki" >/dev/null
"$bin/herzog" certs issue bench --role worker --dir "$work/pki" >/dev/null
"$bin/herzog" --tls "$work/pki/herzog.pem" --listen "127.0.0.1:$port" --state-dir "$work/herzog" 2>"$work/herzog.err" &
"$bin/kinski" --tls "$work/pki/bench.pem" --herzog "127.0.0.1:$port" --state-dir "$work/kinski" --slots 2 --run-as nobody 2>"$work/kinski.err" &
export HERZOG_ADDR=127.0.0.1:$port HERZOG_TLS=$work/pki/admin.pem
hz=$bin/hz
for _ in $(seq 1 100); do
    "$hz" workers --json 2>/dev/null | grep -q '"connected"' && break
    sleep 0.1
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { python3 -c 'import sys,time; t=time.perf_counter(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print((time.perf_counter()-t)*1000)' "$@"; }

"$hz" run --cwd /tmp -- true   # warm-up
hz_ms=$(for _ in $(seq 1 "$N"); do ms "$hz" run --cwd /tmp -- true; done | median)
sh_ms=$(for _ in $(seq 1 "$N"); do ms sh -c true; done | median)

bytes=$((SIZE_MB * 1024 * 1024))
t0=$(date +%s.%N); "$hz" run --cwd /tmp -- head -c "$bytes" /dev/zero | wc -c >"$work/hz.count"; t1=$(date +%s.%N)
l0=$(date +%s.%N); head -c "$bytes" /dev/zero | cat | wc -c >"$work/local.count"; l1=$(date +%s.%N)
[ "$(cat "$work/hz.count")" = "$bytes" ] || { echo "hz run delivered $(cat "$work/hz.count") of $bytes bytes" >&2; exit 1; }

python3 - "$N" "$hz_ms" "$sh_ms" "$SIZE_MB" "$t0" "$t1" "$l0" "$l1" <<'EOF'
import sys
n, hz_ms, sh_ms, mb = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
t0, t1, l0, l1 = map(float, sys.argv[5:9])
hz_s, local_s = t1 - t0, l1 - l0
print(f"| measure | hz run | baseline | ratio |")
print(f"|---|---:|---:|---:|")
print(f"| latency, `true` (median of {n}) | {hz_ms:.1f} ms | {sh_ms:.1f} ms (`sh -c true`) | {hz_ms/sh_ms:.1f}x |")
print(f"| {mb} MiB of output | {hz_s:.2f} s ({mb/hz_s:.0f} MiB/s) | {local_s:.2f} s ({mb/local_s:.0f} MiB/s, a local pipe) | {hz_s/local_s:.1f}x |")
EOF
