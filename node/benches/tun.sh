#!/usr/bin/env bash
# TUN data path benchmark (issue 14), run on demand as root:
#
#   node/benches/tun.sh                                   # builds the release binary first
#   SHIPWORM_BIN=target/release/shipworm DURATION=5 OUT=/tmp/tun.md node/benches/tun.sh
#
# Two hosts behind two home NAT routers (nftables masquerade) and a "wan" namespace with the
# rendezvous on it. In one run, iperf3 TCP from A to B, 1 and 4 streams:
#   underlay   plain TCP to B's public address (a port forward on B's router): the ceiling;
#   boringtun  userspace WireGuard over the same NATed path: the reference we compare with
#              (installed with `cargo install boringtun-cli` if missing; never a dependency);
#   shipworm   `shipworm up --tun`, MTU 1280 (the default) and 1400.
# and the CPU time of the tunnel processes on both ends and of the whole machine, as cores
# used per Gbit/s. Results and how to read them: docs/performance.md §"TUN data path".
set -euo pipefail

DURATION=${DURATION:-10}        # seconds per iperf3 test
READY_SECS=${READY_SECS:-30}    # how long a tunnel may take to carry a ping
MTUS=${MTUS:-"1280 1400"}       # inner MTUs of the tunnels
P=swb-                          # prefix of every namespace and WireGuard interface we create
RDV=5.5.0.2:3478                # the rendezvous, on the wan namespace (the lab's addressing)
WG_PORT=51900                   # WireGuard's UDP port (shipworm's `up` uses 51820)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "/tmp/${P}XXXXXX")
RESULTS=$WORK/results   # per test: path|streams|mtu|bits/s|bits|tunnel CPU s|machine CPU s|other cores|idle cores|per end
TUN_PIDS=()                     # the tunnel processes of the test being run
declare -A ID ADDR              # NodeId and overlay address of sides a and b

log() { echo "== $*" >&2; }
die() {
    echo "tun.sh: FAILED: $*" >&2
    echo "tun.sh: logs are kept in $WORK" >&2
    exit 1
}
set -E   # the ERR trap below holds inside functions too
trap 'die "line $LINENO: \`$BASH_COMMAND\` exited with status $?"' ERR
in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }
# Starts a process in a namespace with its output in LOG; its pid in SPAWNED. `&` on a simple
# command forks and execs, and `ip netns exec` execs the program: the pid is the program's own.
spawn() {
    local ns=$1 out=$2; shift 2
    ip netns exec "$P$ns" "$@" >"$out" 2>&1 &
    SPAWNED=$!
}

# Everything we made, also what an aborted earlier run left (same prefix): the processes in our
# namespaces (by pid), the namespaces (their veths go with them), boringtun's control sockets.
our_netns() { ip netns list | awk -v p="^$P" '$1 ~ p {print $1}'; }
cleanup() {
    local ns sig
    for sig in TERM KILL; do
        for ns in $(our_netns); do
            # shellcheck disable=SC2046 # one pid per word
            kill -s "$sig" $(ip netns pids "$ns") 2>/dev/null || true
        done
        sleep 0.3
    done
    for ns in $(our_netns); do ip netns del "$ns" || true; done
    rm -f /var/run/wireguard/"$P"wg*.sock
}
on_exit() {
    local rc=$?
    trap - ERR
    cleanup
    [ "$rc" = 0 ] && rm -rf "$WORK"
    return "$rc"
}

need_tools() {
    [ "$(id -u)" = 0 ] || die "run as root (network namespaces, nftables, TUN)"
    local missing=() cmd
    for cmd in nft:nftables iperf3:iperf3 wg:wireguard-tools ping:iputils-ping python3:python3; do
        command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
            >"$WORK/apt.log" 2>&1 || die "apt-get install ${missing[*]}: $(tail -5 "$WORK/apt.log")"
    fi
    BORINGTUN=$(command -v boringtun-cli || echo "${CARGO_HOME:-$HOME/.cargo}/bin/boringtun-cli")
    if [ ! -x "$BORINGTUN" ]; then
        log "installing boringtun-cli (a few minutes of compiling)"
        nice cargo install --locked boringtun-cli || die "cargo install boringtun-cli"
    fi
    BIN=${SHIPWORM_BIN:-}
    if [ -z "$BIN" ]; then
        log "building the release shipworm binary"
        (cd "$ROOT" && nice cargo build --release -p shipworm --bin shipworm) || die "cargo build"
        BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/shipworm
    fi
    [ -x "$BIN" ] || die "no shipworm binary at $BIN"
    BIN=$(realpath "$BIN")   # the namespaces' processes must find it from any directory
}

# veth NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a link made directly inside the two namespaces, so
# its names never meet anyone else's interfaces.
veth() {
    ip link add "$2" netns "$P$1" type veth peer name "$5" netns "$P$4"
    ip -n "$P$1" addr add "$3" dev "$2" && ip -n "$P$1" link set "$2" up
    ip -n "$P$4" addr add "$6" dev "$5" && ip -n "$P$4" link set "$5" up
}

# A home router (tests/lab/routers.rs `home_router`): endpoint-independent mapping
# (masquerade keeps ports), conntrack filtering, unsolicited inbound to the router dropped;
# plus the port forwards in $2 (nft rules in the prerouting nat chain).
nat_router() {
    in_ns "$1" nft -f - <<EOF
table ip nat {
    chain pre { type nat hook prerouting priority dstnat; $2 }
    chain post { type nat hook postrouting priority srcnat; oifname "wan" masquerade; }
}
table ip filter {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
        iifname "lan" oifname "wan" accept
        ct state established,related accept
        ct status dnat accept
    }
}
EOF
}

# The lab's addressing: internet 5.5.0.0/16, routers' public addresses 5.5.1.2 and 5.5.2.2,
# hosts 192.168.1.2 and 192.168.2.2. B's router forwards iperf3 (TCP 5201) and WireGuard to B,
# as one would at home; A is the initiator of everything.
topology() {
    local ns
    for ns in wan ra rb ha hb; do
        ip netns add "$P$ns" && ip -n "$P$ns" link set lo up
    done
    veth wan ra 5.5.1.1/24 ra wan 5.5.1.2/24
    veth wan rb 5.5.2.1/24 rb wan 5.5.2.2/24
    veth ra lan 192.168.1.1/24 ha eth0 192.168.1.2/24
    veth rb lan 192.168.2.1/24 hb eth0 192.168.2.2/24
    ip -n "${P}wan" addr add 5.5.0.2/32 dev lo
    for ns in wan ra rb; do in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1; done
    ip -n "${P}ra" route add default via 5.5.1.1
    ip -n "${P}rb" route add default via 5.5.2.1
    ip -n "${P}ha" route add default via 192.168.1.1
    ip -n "${P}hb" route add default via 192.168.2.1
    nat_router ra ""
    nat_router rb "iifname \"wan\" tcp dport 5201 dnat ip to 192.168.2.2;
        iifname \"wan\" udp dport $WG_PORT dnat ip to 192.168.2.2;"
}

start_services() {
    spawn wan "$WORK/rendezvous.log" "$BIN" rendezvous --listen "$RDV" --alt-listen "${RDV%:*}:3479"
    wait_for "rendezvous" 10 grep -q "rendezvous on" "$WORK/rendezvous.log" \
        || die "the rendezvous did not start: $(cat "$WORK/rendezvous.log")"
    spawn hb "$WORK/iperf3-server.log" iperf3 -s
    mapfile -t HELPERS < <(pgrep '^ksoftirqd/')
    HELPERS+=("$SPAWNED")
    wait_for "iperf3 server" 10 iperf3_listening \
        || die "iperf3 -s did not start on B: $(cat "$WORK/iperf3-server.log")"
    local side
    for side in a b; do
        mkdir -p "$WORK/$side"
        read -r ID[$side] ADDR[$side] < <("$BIN" --identity "$WORK/$side/identity" --json id \
            | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["node_id"], j["overlay_addr"])')
    done
}

# wait_for WHAT SECS CMD...: retries CMD every 0.2 s for SECS seconds.
wait_for() {
    local what=$1 secs=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$end" ] && { echo "no $what within ${secs}s" >&2; return 1; }
        sleep 0.2
    done
}
iperf3_listening() { in_ns hb ss -Htln 'sport = :5201' | grep -q .; }

# Waits until A's ping reaches DEST through the tunnel; on timeout shows the logs given.
wait_ping() {
    local dest=$1 what=$2; shift 2
    wait_for "ping to $dest" "$READY_SECS" in_ns ha ping -6 -c1 -W1 "$dest" && return 0
    local f
    for f in "$@"; do echo "---- $f" >&2; cat "$f" >&2; done
    die "$what: A could not ping $dest over the tunnel within ${READY_SECS}s (logs above)"
}

shipworm_up() {
    local mtu=$1 side other
    TUN_PIDS=()
    for side in a b; do
        other=$([ "$side" = a ] && echo b || echo a)
        spawn "h$side" "$WORK/shipworm-$side-$mtu.log" "$BIN" --identity "$WORK/$side/identity" \
            --rendezvous "$RDV" --no-portmap --no-mdns --no-relay \
            up --tun --mtu "$mtu" --peer "${ID[$other]}"
        TUN_PIDS+=("$SPAWNED")
    done
    wait_ping "${ADDR[b]}" "shipworm (mtu $mtu)" "$WORK/shipworm-a-$mtu.log" \
        "$WORK/shipworm-b-$mtu.log" "$WORK/rendezvous.log"
    log "shipworm path: $(grep -h -m1 '^connected to' "$WORK/shipworm-a-$mtu.log" || echo '?')"
}

boringtun_up() {
    local mtu=$1 side
    TUN_PIDS=()
    for side in a b; do
        (umask 077 && wg genkey >"$WORK/wg-$side.key")
        wg pubkey <"$WORK/wg-$side.key" >"$WORK/wg-$side.pub"
        spawn "h$side" "$WORK/boringtun-$side-$mtu.log" "$BORINGTUN" --foreground \
            --disable-drop-privileges "${P}wg$side"
        TUN_PIDS+=("$SPAWNED")
        wait_for "boringtun control socket" 10 test -S "/var/run/wireguard/${P}wg$side.sock" \
            || die "boringtun on $side did not start: $(cat "$WORK/boringtun-$side-$mtu.log")"
    done
    in_ns ha wg set "${P}wga" private-key "$WORK/wg-a.key" listen-port "$WG_PORT" \
        peer "$(cat "$WORK/wg-b.pub")" endpoint "5.5.2.2:$WG_PORT" allowed-ips fd77::2/128 \
        persistent-keepalive 25
    in_ns hb wg set "${P}wgb" private-key "$WORK/wg-b.key" listen-port "$WG_PORT" \
        peer "$(cat "$WORK/wg-a.pub")" allowed-ips fd77::1/128
    ip -n "${P}ha" addr add fd77::1/64 dev "${P}wga" nodad
    ip -n "${P}hb" addr add fd77::2/64 dev "${P}wgb" nodad
    for side in a b; do ip -n "${P}h$side" link set "${P}wg$side" mtu "$mtu" up; done
    wait_ping fd77::2 "boringtun (mtu $mtu)" "$WORK/boringtun-a-$mtu.log" "$WORK/boringtun-b-$mtu.log"
}

# Stops the tunnel processes (SIGTERM, then SIGKILL after 5 s) before the next test.
tunnel_down() {
    local pid
    [ ${#TUN_PIDS[@]} -gt 0 ] || return 0
    kill "${TUN_PIDS[@]}" 2>/dev/null || true
    for pid in "${TUN_PIDS[@]}"; do
        timeout 5 tail --pid="$pid" -f /dev/null || kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -f /var/run/wireguard/"$P"wg*.sock
    TUN_PIDS=()
}

# CPU ticks (utime + stime, fields 14 and 15 of /proc/PID/stat, all threads) of the given pids.
proc_ticks() {
    local t=0 pid f
    for pid in "$@"; do
        read -r -a f < <(sed 's/.*) //' "/proc/$pid/stat")   # fields from 3 (state) on
        t=$((t + f[11] + f[12]))
    done
    echo "$t"
}
# "PID TID TICKS" for every thread of the given pids: which end, and which of its threads, was
# busy (a data path bound to one thread shows as a thread near one whole core).
thread_ticks() {
    local pid stat tid f
    for pid in "$@"; do
        for stat in /proc/"$pid"/task/*/stat; do
            read -r -a f < <(sed 's/.*) //' "$stat" 2>/dev/null) || continue
            tid=${stat%/stat}
            echo "$pid ${tid##*/} $((f[11] + f[12]))"
        done
    done
}
# Busy CPU ticks of the whole machine from /proc/stat's cpu line: all but idle, iowait and
# steal. With tick-based accounting (no CONFIG_IRQ_TIME_ACCOUNTING, as here) a tick spent in an
# interrupt or softirq is also charged to the task it interrupted, so irq and softirq belong in
# the sum that the processes' utime + stime are compared with.
machine_ticks() {
    local user nice sys irq softirq
    read -r _ user nice sys _ _ irq softirq _ </proc/stat   # _: idle, iowait; then steal...
    echo $((user + nice + sys + irq + softirq))
}

# measure PATH STREAMS MTU DEST: one iperf3 test from A to DEST, CPU sampled around it. The
# machine is shared: what processes other than the tunnels, iperf3 and the kernel's softirq
# threads (HELPERS: iperf3's server and ksoftirqd/N) took meanwhile is kept too, so that a row
# disturbed by someone's compiler shows it.
measure() {
    local path=$1 streams=$2 mtu=$3 dest=$4 json t0 s0 m0 t1 s1 m1
    json=$WORK/iperf-$path-$mtu-$streams.json
    log "$path, mtu $mtu, $streams stream(s), ${DURATION}s"
    t0=$(proc_ticks "${TUN_PIDS[@]}"); s0=$(proc_ticks "${HELPERS[@]}"); m0=$(machine_ticks)
    thread_ticks "${TUN_PIDS[@]}" >"$WORK/threads0"
    in_ns ha iperf3 -c "$dest" -P "$streams" -t "$DURATION" -J >"$json" \
        || die "iperf3 to $dest ($path, mtu $mtu, $streams streams): $(grep -m1 '"error"' "$json" || tail -3 "$json")"
    t1=$(proc_ticks "${TUN_PIDS[@]}"); s1=$(proc_ticks "${HELPERS[@]}"); m1=$(machine_ticks)
    thread_ticks "${TUN_PIDS[@]}" >"$WORK/threads1"
    python3 - "$json" "$path" "$streams" "$mtu" "$((t1 - t0))" "$((s1 - s0))" "$m0" "$m1" \
        "$WORK/threads0" "$WORK/threads1" "$(nproc)" "${TUN_PIDS[@]}" >>"$RESULTS" <<'EOF'
import json, os, sys
f, path, streams, mtu, tun, helpers, m0, m1, th0, th1, ncpu, *pids = sys.argv[1:]
hz = os.sysconf("SC_CLK_TCK")
end = json.load(open(f))["end"]
got = end["sum_received"]
secs = got["seconds"]
# iperf3's client reports its own CPU (getrusage) as a percentage of the test's time.
client = end["cpu_utilization_percent"]["host_total"] / 100 * end["sum_sent"]["seconds"]
mach = (int(m1) - int(m0)) / hz
others = (mach - (int(tun) + int(helpers)) / hz - client) / secs
tun = int(tun) / hz if path != "underlay" else -1
idle = int(ncpu) - mach / secs
# Per end (A, the sender, then B): cores busy, and the busiest thread's share of a core.
def threads(path):
    t = {}
    for line in open(path):
        pid, tid, ticks = line.split()
        t[(pid, tid)] = int(ticks)
    return t
before, after = threads(th0), threads(th1)
ends = []
for pid in pids:
    d = [v - before.get(k, 0) for k, v in after.items() if k[0] == pid]
    ends.append(f"{sum(d) / hz / secs:.2f} ({max(d, default=0) / hz / secs:.2f})")
ends = " / ".join(ends) if ends else "-"
print(f"{path}|{streams}|{mtu}|{got['bits_per_second']}|{got['bytes'] * 8}|{tun}|{mach}|{others}|{idle}|{ends}")
EOF
}

# The markdown table: ratios against the underlay and boringtun with the same stream count
# (and MTU); CPU as cores per Gbit/s, which is CPU-seconds per Gbit carried.
report() {
    python3 - "$RESULTS" "$DURATION" "$(nproc)" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" <<'EOF'
import sys
rows = [l.strip().split("|") for l in open(sys.argv[1]) if l.strip()]
rows = [(p, int(s), m, *map(float, rest), ends) for p, s, m, *rest, ends in rows]
base = {s: bps for p, s, m, bps, *_ in rows if p == "underlay"}
wg = {(s, m): bps for p, s, m, bps, *_ in rows if p == "boringtun"}
pct = lambda x, y: f"{100 * x / y:.0f} %" if y else "n/a"
dur, ncpu, commit = sys.argv[2:]
print(f"iperf3 TCP A -> B, {dur} s per test, {ncpu} cores, shipworm at {commit}. CPU: CPU-seconds "
      "per Gbit carried (= cores busy per Gbit/s). Other work: cores that processes other than "
      "the tunnels, iperf3 and ksoftirqd kept busy during the test (other users of the machine). "
      "Idle: cores the whole machine left idle. A / B: cores each tunnel process kept busy "
      "(sender, receiver), in brackets its busiest thread's share of one core.\n")
print("| path | streams | MTU | Gbit/s | vs underlay | vs boringtun | tunnel CPU, both ends "
      "(cores per Gbit/s) | whole machine (cores per Gbit/s) | other work (cores) | idle (cores) "
      "| A / B, cores (busiest thread) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for p, s, m, bps, bits, tun, mach, others, idle, ends in rows:
    gbit = bits / 1e9
    tun = f"{tun / gbit:.2f}" if tun >= 0 else "-"
    vs_wg = pct(bps, wg.get((s, m), 0)) if p != "underlay" else "-"
    print(f"| {p} | {s} | {m} | {bps / 1e9:.2f} | {pct(bps, base.get(s, 0))} | {vs_wg} | {tun} "
          f"| {mach / gbit:.2f} | {others:.2f} | {idle:.2f} | {ends} |")
EOF
}

main() {
    trap on_exit EXIT
    need_tools
    cleanup
    topology
    start_services
    : >"$RESULTS"
    measure underlay 1 "1500 (veth)" 5.5.2.2
    measure underlay 4 "1500 (veth)" 5.5.2.2
    local mtu
    for mtu in $MTUS; do
        boringtun_up "$mtu"
        measure boringtun 1 "$mtu" fd77::2
        measure boringtun 4 "$mtu" fd77::2
        tunnel_down
        shipworm_up "$mtu"
        measure shipworm 1 "$mtu" "${ADDR[b]}"
        measure shipworm 4 "$mtu" "${ADDR[b]}"
        tunnel_down
    done
    report | tee "${OUT:-/dev/null}"
}

main "$@"
