#!/usr/bin/env python3
"""Classify perf samples (perf script -F comm,period,ip,sym) of `hz local` by what the time
was spent on, by the first matching rule over (comm, call chain). Prints a table in % of all
samples and in CPU microseconds per fragment."""
import sys, re, collections

path, fragments = sys.argv[1], int(sys.argv[2])
RULES = [
    # (category, predicate over comm and the chain's symbols, innermost first)
    ("program: exec (execve, ELF load, mm set-up)", lambda c, s: any("sys_execve" in x or "bprm_" in x for x in s)),
    ("program: dynamic loader (ld.so)", lambda c, s: c == "true" and any(x.startswith("_dl_") or x == "dl_main" or x == "_dl_start" for x in s)),
    ("program: locale set-up (setlocale)", lambda c, s: c == "true" and any(x.startswith("_nl_") or "setlocale" in x for x in s)),
    ("program: exit and mm teardown", lambda c, s: c == "true" and any(x in ("do_exit", "do_group_exit", "exit_mmap", "mmput") for x in s)),
    ("program: page faults, other", lambda c, s: c == "true"),
    ("kinski: log files created (openat O_CREAT, ext4 inode allocation)", lambda c, s: any(x == "ext4_create" for x in s) or (any("sys_openat" in x for x in s) and any("open_output" in x or "spawn_as" in x for x in s))),
    ("kinski: output directories (create_dir_all: mkdir/stat)", lambda c, s: any("create_dir_all" in x or "sys_mkdir" in x for x in s)),
    ("herzog: SQLite fsync", lambda c, s: any(x in ("do_fsync", "__x64_sys_fsync", "__x64_sys_fdatasync") for x in s)),
    ("herzog: SQLite (commit without fsync)", lambda c, s: any("Store::commit" in x or x.startswith("sqlite3") for x in s)),
    ("kinski: spawn (posix_spawn/clone, child until exec)", lambda c, s: any("Command>::spawn" in x or "kernel_clone" in x or "__x64_sys_clone" in x or "posix_spawn" in x or "ret_from_fork" in x for x in s)),
    ("kinski: reap (pidfd, wait4, kill group)", lambda c, s: any("wait4" in x or "pidfd" in x or "sys_kill" in x for x in s)),
    ("kinski: journal", lambda c, s: any("kinski::journal" in x or "process_starttime" in x for x in s)),
    ("logging (tracing)", lambda c, s: c.startswith("tracing-append") or any(x.startswith("tracing_subscriber") or x.startswith("tracing_appender") or "tracing_core::event" in x for x in s)),
    ("RPC: TCP send/receive syscalls (loopback)", lambda c, s: any(x in ("tcp_sendmsg", "tcp_recvmsg", "sock_write_iter", "sock_read_iter", "do_writev", "__x64_sys_recvfrom", "__x64_sys_sendto", "sock_recvmsg") for x in s)),
    ("RPC: TLS records (rustls, ring)", lambda c, s: any(x.startswith("rustls::") or x.startswith("<rustls::") or x.startswith("ring::") or x.startswith("ring_core") for x in s)),
    ("RPC: JSON (serde_json)", lambda c, s: any(x.startswith("serde_json") or x.startswith("<serde_json") or "as serde_core::ser::Serialize" in x or "as serde_core::de::Deserialize" in x for x in s)),
    ("RPC: tarpc, framing, channels", lambda c, s: any(x.startswith("tarpc") or x.startswith("<tarpc") or "tokio_util::codec" in x for x in s)),
    ("herzog: state machine, scheduler, engine", lambda c, s: any(x.startswith("herzog::") for x in s)),
    ("kinski: other", lambda c, s: any(x.startswith("kinski::") for x in s)),
    ("hz: client (progress polling, summary)", lambda c, s: any(x.startswith("cli::") for x in s)),
    ("runtime: tokio scheduling, futex, context switches", lambda c, s: any(x.startswith("tokio::runtime") or "futex" in x or "schedule" in x or "epoll" in x for x in s)),
]
counts = collections.Counter()
total = 0
period_total = 0
with open(path, errors="replace") as f:
    comm, period, syms = None, 0, []
    def flush():
        global total, period_total
        if comm is None:
            return
        total += period
        cat = next((name for name, p in RULES if p(comm, syms)), "other")
        counts[cat] += period
    for line in f:
        if not line.strip():
            flush(); comm = None; syms = []
            continue
        if not line.startswith("\t") and not line.startswith(" " * 8):
            flush()
            parts = line.split()
            comm = parts[0]; period = int(parts[-1]); syms = []
        else:
            p = line.strip().split(None, 1)
            if len(p) == 2:
                syms.append(p[1].split(" (")[0])
    flush()
ns = total  # period is in ns for cpu-clock
print(f"samples: {total/1e9:.2f} s of CPU over {fragments} fragments = {total/1e3/fragments:.0f} µs per fragment")
print("| where | share | CPU per fragment |\n|---|---:|---:|")
for cat, v in counts.most_common():
    print(f"| {cat} | {100*v/total:.1f}% | {v/1e3/fragments:.0f} µs |")
