#!/usr/bin/env python3
"""Classify perf samples of the herzog process (perf script -F comm,period,ip,sym) by the first
matching rule over the call chain. Args: script file, fragments completed during the window."""
import sys, collections
path, fragments = sys.argv[1], int(sys.argv[2])
def has(s, *needles):
    return any(any(n in x for n in needles) for x in s)
def starts(s, *prefixes):
    return any(x.startswith(prefixes) for x in s)
RULES = [
    ("SQLite: fsync of the WAL", lambda c, s: has(s, "do_fsync", "__x64_sys_fdatasync")),
    ("SQLite: statements, WAL writes (Store::commit)", lambda c, s: has(s, "Store::commit") or starts(s, "sqlite3")),
    ("logging (tracing: format, write)", lambda c, s: c.startswith("tracing-append") or starts(s, "tracing_subscriber", "<tracing_subscriber", "tracing_appender", "<tracing_appender") or has(s, "tracing_core::event::Event::dispatch")),
    ("scheduler (Machine::schedule, scheduler::assign)", lambda c, s: has(s, "Machine::schedule", "scheduler::assign")),
    ("state machine (Machine::handle: complete, reconcile, ...)", lambda c, s: has(s, "Machine::handle", "Machine::restore")),
    ("RPC: TCP send/receive syscalls", lambda c, s: has(s, "tcp_sendmsg", "tcp_recvmsg", "sock_write_iter", "sock_read_iter", "do_writev", "__x64_sys_recvfrom", "sock_recvmsg", "__x64_sys_write", "ksys_read")),
    ("RPC: TLS records (rustls, ring)", lambda c, s: starts(s, "rustls::", "<rustls::", "ring::", "ring_core")),
    ("RPC: JSON encode/decode (serde_json)", lambda c, s: starts(s, "serde_json", "<serde_json") or has(s, "as serde_core::ser::Serialize", "as serde_core::de::Deserialize", "serde::ser::Serialize", "serde::de::Deserialize")),
    ("RPC: tarpc dispatch, framing, per-request tasks", lambda c, s: starts(s, "tarpc", "<tarpc") or has(s, "tokio_util::codec", "Dispatcher::execute", "serve_connection", "herzog::api")),
    ("engine loop (channels, replies, effects)", lambda c, s: has(s, "herzog::engine")),
    ("tokio runtime: scheduling, wakeups, epoll, futex", lambda c, s: starts(s, "tokio::runtime", "<tokio::runtime") or has(s, "futex", "schedule", "epoll")),
    ("allocator (malloc/free not attributed above)", lambda c, s: has(s, "malloc", "cfree", "_int_free", "realloc")),
]
counts = collections.Counter(); total = 0
with open(path, errors="replace") as f:
    comm, period, syms = None, 0, []
    def flush():
        global total
        if comm is None:
            return
        total += period
        counts[next((n for n, p in RULES if p(comm, syms)), "other")] += period
    for line in f:
        if not line.strip():
            flush(); comm = None; syms = []; continue
        if not line[0].isspace():
            flush(); parts = line.split(); comm = parts[0]; period = int(parts[-1]); syms = []
        else:
            p = line.strip().split(None, 1)
            if len(p) == 2:
                syms.append(p[1].split(" (")[0])
    flush()
print(f"herzog: {total/1e9:.2f} s of CPU for {fragments} fragments = {total/1e3/fragments:.1f} µs per fragment")
print("| where | share | CPU per fragment |\n|---|---:|---:|")
for cat, v in counts.most_common():
    print(f"| {cat} | {100*v/total:.1f}% | {v/1e3/fragments:.1f} µs |")
