#!/usr/bin/env bash
# A test bed of four real hosts on one machine: network namespaces joined by a bridge, each
# with its own address and its own sshd. Used by tests/tests/hosts/; usable by hand:
#
#   sudo tests/testbed/netns.sh up   [PREFIX]   # prints the bed's description (KEY=VALUE lines)
#   sudo tests/testbed/netns.sh down [PREFIX]   # idempotent; safe after a crash
#   sudo tests/testbed/netns.sh status [PREFIX]
#   sudo tests/testbed/netns.sh list            # the PREFIX of every bed on this machine
#
# Layout (PREFIX defaults to "hzbed-"; letters, digits, '_' and '-', at most 24 characters):
#
#   namespace PREFIXhub         bridge br0, one port per host, named after the host; no address
#   namespace PREFIXeuclid      eth0 10.77.0.1/24   sshd on 10.77.0.1:22
#   namespace PREFIXpythagoras  eth0 10.77.0.2/24   sshd on 10.77.0.2:22
#   namespace PREFIXleibniz     eth0 10.77.0.3/24   sshd on 10.77.0.3:22
#   namespace PREFIXnewton      eth0 10.77.0.4/24   sshd on 10.77.0.4:22
#
# Nothing is added to the root namespace: the veth pairs are created directly in their
# namespaces and the bridge lives in its own, so beds with different prefixes never clash
# (they all use 10.77.0.0/24, each on its own isolated bridge) and no traffic can leave the
# bed. Cutting a host's link: `ip -n PREFIXhub link set HOST down` (its switch port).
# Run a command on a host: `ip netns exec PREFIXnewton CMD`. Each namespace also sees the
# bed's host names (/etc/netns/NS/hosts, bind-mounted by `ip netns exec` over /etc/hosts), so
# `ssh newton` and `--herzog euclid:7373` resolve inside the bed.
#
# The bed's directory, ${TMPDIR:-/tmp}/herzog-testbed.PREFIX, holds:
#   bed.env                 what `up` prints: PREFIX, DIR, HUB, NET, KEY, WRONG_KEY, KNOWN_HOSTS,
#                           SSH_CONFIG, HOSTS (space separated)
#   hosts                   one line per host: NAME NAMESPACE ADDRESS HUB_PORT
#   client/id_ed25519       the test key, authorised for root on every host
#   client/wrong_ed25519    a key that no host accepts
#   known_hosts             every host's key, under its name and its address
#   ssh_config              `ssh -F DIR/ssh_config newton` logs in as root with the test key,
#                           checking the host key (BatchMode, StrictHostKeyChecking yes)
#                           (it names the test key: to try another key, do not use -F)
#   HOST/                   sshd_config, ssh_host_ed25519_key, sshd.pid, sshd.log, scratch/
#
# sshd serves SFTP (internal-sftp), keeps its default MaxSessions (10), logs VERBOSE to
# HOST/sshd.log, and runs with StrictModes off (the bed lives under /tmp) and without PAM.
# `up` makes /run/sshd (sshd's privilege separation directory) if it is missing.
# `down` SIGKILLs every process in the bed's namespaces (sshd, and whatever was started there
# with `ip netns exec`), deletes the namespaces (and with them the veths and the bridge),
# /etc/netns/PREFIX*, and the bed's directory. HZ_TESTBED_NET=10.88.1 picks another /24.
#
# Exit codes: 0 done; 77 the bed cannot be made here (not root, a tool is missing, the kernel
# refuses namespaces, veths or bridges): the reason is on stderr, and callers skip loudly;
# 1 anything else (the bed is torn down again); 2 bad usage.

set -euo pipefail

SKIP=77
HOST_NAMES=(euclid pythagoras leibniz newton)
NET=${HZ_TESTBED_NET:-10.77.0}

say() { printf 'netns.sh: %s\n' "$*" >&2; }
skip() {
    say "SKIP: $*"
    exit "$SKIP"
}
die() {
    say "ERROR: $*"
    exit 1
}
usage() {
    say "usage: $0 up|down|status [PREFIX] | list"
    exit 2
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
cmd=$1
PREFIX=${2:-hzbed-}
[[ $PREFIX =~ ^[A-Za-z0-9_-]{1,24}$ ]] || {
    say "bad PREFIX '$PREFIX': letters, digits, '_' and '-', at most 24 characters"
    exit 2
}
DIR=${TMPDIR:-/tmp}/herzog-testbed.$PREFIX
HUB=${PREFIX}hub

ns_of() { printf '%s%s' "$PREFIX" "$1"; }
addr_of() {
    local i
    for i in "${!HOST_NAMES[@]}"; do
        if [ "${HOST_NAMES[$i]}" = "$1" ]; then
            printf '%s.%d' "$NET" $((i + 1))
            return
        fi
    done
    die "no host $1"
}
ns_exists() { [ -e "/run/netns/$1" ]; }

# What `up` and `down` need; a missing piece is a reason to skip, not a failure.
find_tool() {
    local t
    for t in "$@"; do
        if command -v "$t" >/dev/null 2>&1; then
            command -v "$t"
            return
        fi
        if [ -x "/usr/sbin/$t" ]; then
            printf '/usr/sbin/%s\n' "$t"
            return
        fi
    done
    return 1
}
require_root() {
    [ "$(id -u)" = 0 ] || skip "needs root to create network namespaces (running as uid $(id -u)); run the tests as root, e.g. in CI"
}
require_ip() {
    IP=$(find_tool ip) || skip "needs 'ip' (iproute2): apt-get install -y iproute2"
}
require_ssh() {
    SSHD=$(find_tool sshd) || skip "needs 'sshd' (openssh-server): apt-get install -y openssh-server"
    SSH_KEYGEN=$(find_tool ssh-keygen) || skip "needs 'ssh-keygen' (openssh-client): apt-get install -y openssh-client"
    SSH=$(find_tool ssh) || skip "needs 'ssh' (openssh-client): apt-get install -y openssh-client"
}

# Kills every process in namespace $1 (they are the bed's: sshd, and whatever tests started
# there with `ip netns exec`), by pid, then waits until they are gone.
kill_in_ns() {
    local ns=$1 pids i
    for i in $(seq 1 50); do
        pids=$("$IP" netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    say "processes still in namespace $ns after SIGKILL: $pids"
}

down() {
    local name ns
    for name in "${HOST_NAMES[@]}" hub; do
        ns=$(ns_of "$name")
        if ns_exists "$ns"; then
            kill_in_ns "$ns"
            # Deleting a namespace destroys its devices, and with one end the whole veth pair.
            "$IP" netns del "$ns" 2>/dev/null || ! ns_exists "$ns" || say "failed to delete namespace $ns"
        fi
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true
    rm -rf "$DIR"
}

# Writes one host's sshd config and keys, and starts its sshd in its namespace.
start_sshd() {
    local name=$1 ns addr hd extra=""
    ns=$(ns_of "$name")
    addr=$(addr_of "$name")
    hd=$DIR/$name
    mkdir -p "$hd/scratch"
    "$SSH_KEYGEN" -q -t ed25519 -N '' -C "host-$name" -f "$hd/ssh_host_ed25519_key"
    cat >"$hd/sshd_config" <<EOF
# The sshd of test host $name (namespace $ns), written by tests/testbed/netns.sh.
ListenAddress $addr
Port 22
HostKey $hd/ssh_host_ed25519_key
PidFile $hd/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
    # OpenSSH 9.8+ penalises addresses that fail to log in, which would refuse the test key
    # right after a test of the wrong one; older versions do not know the option.
    if "$SSHD" -t -f "$hd/sshd_config" -o PerSourcePenalties=no 2>/dev/null; then
        extra="PerSourcePenalties no"
        printf '%s\n' "$extra" >>"$hd/sshd_config"
    fi
    "$SSHD" -t -f "$hd/sshd_config" 2>"$hd/sshd.log" || die "sshd rejects $hd/sshd_config: $(cat "$hd/sshd.log")"
    # sshd daemonises; it writes its pid file once it listens.
    "$IP" netns exec "$ns" "$SSHD" -f "$hd/sshd_config" -E "$hd/sshd.log" ||
        die "sshd did not start on $name: $(cat "$hd/sshd.log")"
}

up() {
    local name ns addr i
    require_root
    require_ip
    require_ssh
    down
    mkdir -p "$DIR/client"
    chmod 0755 "$DIR"

    # The hub: a bridge in a namespace of its own. A failure here means the kernel or the
    # container refuses namespaces or links: skip, with the reason.
    local err
    err=$("$IP" netns add "$HUB" 2>&1) || {
        down
        skip "cannot create a network namespace ($err); the tests need CAP_SYS_ADMIN (root outside a restricted container)"
    }
    err=$({ "$IP" -n "$HUB" link add br0 type bridge stp_state 0 forward_delay 0 &&
        "$IP" -n "$HUB" link set br0 up && "$IP" -n "$HUB" link set lo up; } 2>&1) || {
        down
        skip "cannot create a bridge in a namespace ($err)"
    }
    for name in "${HOST_NAMES[@]}"; do
        ns=$(ns_of "$name")
        addr=$(addr_of "$name")
        err=$({ "$IP" netns add "$ns" &&
            "$IP" link add name eth0 netns "$ns" type veth peer name "$name" netns "$HUB"; } 2>&1) || {
            down
            skip "cannot create namespace $ns with a veth link ($err)"
        }
        "$IP" -n "$HUB" link set "$name" master br0
        "$IP" -n "$HUB" link set "$name" up
        "$IP" -n "$ns" link set lo up
        "$IP" -n "$ns" addr add "$addr/24" dev eth0
        "$IP" -n "$ns" link set eth0 up
    done

    # Every namespace resolves the bed's host names.
    for name in "${HOST_NAMES[@]}"; do
        ns=$(ns_of "$name")
        mkdir -p "/etc/netns/$ns"
        {
            printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n'
            for i in "${HOST_NAMES[@]}"; do printf '%s\t%s\n' "$(addr_of "$i")" "$i"; done
        } >"/etc/netns/$ns/hosts"
    done

    # The client keys, and every host's sshd.
    "$SSH_KEYGEN" -q -t ed25519 -N '' -C herzog-testbed -f "$DIR/client/id_ed25519"
    "$SSH_KEYGEN" -q -t ed25519 -N '' -C herzog-testbed-wrong -f "$DIR/client/wrong_ed25519"
    cp "$DIR/client/id_ed25519.pub" "$DIR/authorized_keys"
    mkdir -p /run/sshd # sshd's privilege separation directory (systemd makes it on real hosts)
    chmod 0755 /run/sshd
    : >"$DIR/known_hosts"
    : >"$DIR/hosts"
    cat >"$DIR/ssh_config" <<EOF
# The bed's hosts for \`ssh -F $DIR/ssh_config HOST\`, written by tests/testbed/netns.sh.
EOF
    for name in "${HOST_NAMES[@]}"; do
        addr=$(addr_of "$name")
        start_sshd "$name"
        printf '%s,%s %s\n' "$name" "$addr" "$(cut -d' ' -f1,2 "$DIR/$name/ssh_host_ed25519_key.pub")" >>"$DIR/known_hosts"
        printf '%s %s %s %s\n' "$name" "$(ns_of "$name")" "$addr" "$name" >>"$DIR/hosts"
        printf 'Host %s\n    HostName %s\n    HostKeyAlias %s\n' "$name" "$addr" "$name" >>"$DIR/ssh_config"
    done
    cat >>"$DIR/ssh_config" <<EOF
Host *
    User root
    IdentityFile $DIR/client/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $DIR/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
EOF

    # Ready when every sshd listens (its pid file) and a login over the bridge works from
    # euclid to each host, host key checked.
    for name in "${HOST_NAMES[@]}"; do
        for i in $(seq 1 100); do
            [ -s "$DIR/$name/sshd.pid" ] && break
            sleep 0.05
        done
        [ -s "$DIR/$name/sshd.pid" ] || die "sshd on $name wrote no pid file within 5 s: $(cat "$DIR/$name/sshd.log")"
    done
    local pids=()
    for name in "${HOST_NAMES[@]}"; do
        "$IP" netns exec "$(ns_of euclid)" "$SSH" -F "$DIR/ssh_config" "$name" true >"$DIR/$name/login.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!HOST_NAMES[@]}"; do
        name=${HOST_NAMES[$i]}
        wait "${pids[$i]}" ||
            die "the test key cannot log in from euclid to $name ($(cat "$DIR/$name/login.log")); sshd's log: $(cat "$DIR/$name/sshd.log")"
    done

    cat >"$DIR/bed.env" <<EOF
PREFIX=$PREFIX
DIR=$DIR
HUB=$HUB
NET=$NET.0/24
KEY=$DIR/client/id_ed25519
WRONG_KEY=$DIR/client/wrong_ed25519
KNOWN_HOSTS=$DIR/known_hosts
SSH_CONFIG=$DIR/ssh_config
HOSTS=${HOST_NAMES[*]}
EOF
    cat "$DIR/bed.env"
}

status() {
    require_ip
    local name ns
    for name in hub "${HOST_NAMES[@]}"; do
        ns=$(ns_of "$name")
        if ns_exists "$ns"; then
            printf '%s: up, processes: %s\n' "$ns" "$("$IP" netns pids "$ns" | tr '\n' ' ')"
        else
            printf '%s: absent\n' "$ns"
        fi
    done
    [ -d "$DIR" ] && printf 'directory: %s\n' "$DIR" || printf 'directory: absent\n'
}

on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne "$SKIP" ]; then
        down
        exit 1
    fi
}

# Every bed's prefix: the namespaces called PREFIXhub holding a bridge br0 (also a bed left
# half made by a crash, whose directory may be gone).
list() {
    local f ns
    for f in /run/netns/*hub; do
        [ -e "$f" ] || continue
        ns=${f#/run/netns/}
        if "$IP" -n "$ns" link show br0 >/dev/null 2>&1; then printf '%s\n' "${ns%hub}"; fi
    done
    return 0
}

case $cmd in
list)
    require_ip
    list
    ;;
up)
    # Anything failing after the first namespace exists tears the bed down again.
    trap on_exit EXIT
    up
    ;;
down)
    require_root
    require_ip
    down
    ;;
status) status ;;
*) usage ;;
esac
