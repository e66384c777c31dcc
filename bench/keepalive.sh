#!/usr/bin/env bash
# What pgfront's dead-peer detection costs: TCP keepalive probes on many idle sessions.
#
#   bash bench/keepalive.sh                                       # 10,000 sessions, 3 rounds of 60 s
#   KA_SESSIONS=1000 KA_SECONDS=20 KA_ROUNDS=1 bash bench/keepalive.sh   # quick run
#
# For each tcp setting in KA_SETTINGS it starts a fresh pgfront (tcp: set on both sides) in
# front of bench/idleconns, a scripted PostgreSQL peer, opens KA_SESSIONS idle sessions through
# it, lets them settle (parked, silent) and measures over KA_SECONDS:
#   - keepalive probes sent per second (the kernel's TcpExtTCPKeepAlive counter) and packets per
#     second on the loopback (the probes and their ACKs: both ends are on this machine);
#   - packets the kernel dropped for a full input backlog (/proc/net/softnet_stat, all
#     namespaces): a burst of probes larger than net.core.netdev_max_backlog on the loopback;
#   - pgfront's own CPU (user+system of all its threads, /proc/PID/stat);
#   - the kernel CPU the probes take. They are sent from the kernel's timer softirq and their
#     ACKs handled in its network softirq, which no process is charged for, so with perf(1) the
#     whole machine is sampled (perf record -a -g, KA_PERF_FREQ Hz) and a sample counts as
#     *probe sending* when its kernel stack is under tcp_keepalive_timer, as *network receive*
#     when it is under net_rx_action. On the loopback both ends are here, so the receive side
#     includes the peer's work (taking the probe, sending its ACK) besides pgfront's (taking the
#     ACK): an upper bound for one host. Network receive also counts whatever other traffic the
#     machine has: compare it with the `off` setting. Without perf those columns read n/a.
# Neither idleconns side sends keepalive of its own, so every probe counted is pgfront's: two
# sockets per session (client side, server side), one probe each per keepalive_idle of silence,
# each answered by one ACK.
#
# As root it runs everything in a network namespace of its own (ip netns), so the probe and
# packet counts are this run's alone; otherwise in the current one (other traffic on the
# loopback is counted too). Settings are interleaved in each round and their order rotates.
# The table goes to stdout (medians over rounds), progress to stderr; everything started is
# stopped, and the namespace deleted, on exit.
#
# Settings (environment):
#   KA_SESSIONS=10000   idle sessions (capped by the open-files limit: 4 descriptors each here)
#   KA_SECONDS=60       measurement window per setting; a multiple of the longest keepalive_idle
#                       counts its synchronised bursts of probes fairly
#   KA_ROUNDS=3         rounds over all settings
#   KA_SETTLE=5         seconds between the sessions being ready and the window (they park at 2 s)
#   KA_SETTINGS="off:0:0:0:0 old:30:10:3:60 default:5:2:4:13 stress:1:1:2:2"
#                       name:keepalive_idle:keepalive_interval:keepalive_count:user_timeout (s)
#   KA_PERF_FREQ=997    perf sampling frequency per CPU (0: no perf)
#   KA_PARALLEL=1       sessions opened at once. One at a time spreads their keepalive timers
#                       over the opening time instead of firing them in one burst, which on the
#                       loopback overflows the kernel's backlog (net.core.netdev_max_backlog)
#                       and drops probes (packets/s then reads below 2 x probes/s)
#   KA_PORT_BASE=29432  first of two consecutive loopback ports used
set -euo pipefail

KA_SESSIONS=${KA_SESSIONS:-10000}
KA_SECONDS=${KA_SECONDS:-60}
KA_ROUNDS=${KA_ROUNDS:-3}
KA_SETTLE=${KA_SETTLE:-5}
KA_SETTINGS=${KA_SETTINGS:-"off:0:0:0:0 old:30:10:3:60 default:5:2:4:13 stress:1:1:2:2"}
KA_PORT_BASE=${KA_PORT_BASE:-29432}
KA_PERF_FREQ=${KA_PERF_FREQ:-997}
KA_PARALLEL=${KA_PARALLEL:-1}
HOST=127.0.0.1
PORT_PEER=$KA_PORT_BASE
PORT_ROUTE=$((KA_PORT_BASE + 1))

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

BENCH_TAG=keepalive
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---- the measuring run (in the namespace when there is one) ---------------------------------
if [ -n "${KA_CHILD:-}" ]; then
	TMP=$KA_CHILD
	PIDS=()
	cleanup_child() {
		local rc=$? pid
		trap - EXIT INT TERM
		set +e
		for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
		exit "$rc"
	}
	trap cleanup_child EXIT INT TERM
	for p in "$PORT_PEER" "$PORT_ROUTE"; do
		port_free "$p" || die "port $HOST:$p is in use; set KA_PORT_BASE"
	done

	ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
	ulimit -n "$(ulimit -Hn)"
	NOFILE=$(ulimit -n)
	[ "$NOFILE" = unlimited ] && NOFILE=1048576
	CAP=$(((NOFILE - 200) / 2)) # per process: pgfront holds 2 descriptors per session
	N=$((KA_SESSIONS < CAP ? KA_SESSIONS : CAP))
	[ "$N" = "$KA_SESSIONS" ] || log "open-files limit $NOFILE: $N sessions instead of $KA_SESSIONS"

	probes() { awk '$1 == "TcpExt:" {if (!h) {for (i = 2; i <= NF; i++) col[$i] = i; h = 1} else print $col["TCPKeepAlive"]}' /proc/net/netstat; }
	lo_packets() { cat /sys/class/net/lo/statistics/tx_packets; }
	# Packets the kernel dropped because a CPU's input backlog was full (all namespaces).
	backlog_drops() { local d=0 _a b _r; while read -r _a b _r; do d=$((d + 16#$b)); done </proc/net/softnet_stat; echo "$d"; }
	PERF=""
	if [ "$KA_PERF_FREQ" != 0 ] && command -v perf >/dev/null &&
		perf record -a -g -F "$KA_PERF_FREQ" -o "$TMP/perf.probe" -- true >/dev/null 2>&1; then
		PERF=perf
	else
		log "no perf (KA_PERF_FREQ=0, or perf missing or not permitted): no kernel CPU figures"
	fi
	# window: sleep KA_SECONDS, sampling the machine with perf when there is perf.
	window() {
		if [ -n "$PERF" ]; then
			perf record -q -a -g -F "$KA_PERF_FREQ" -o "$TMP/perf.data" -- sleep "$KA_SECONDS" >/dev/null 2>&1
		else
			sleep "$KA_SECONDS"
		fi
	}
	# kernel_ms: CPU ms per second of the window under tcp_keepalive_timer, and under
	# net_rx_action, from the perf samples (each is 1/KA_PERF_FREQ of a CPU second).
	kernel_ms() {
		[ -n "$PERF" ] || { printf 'n/a\tn/a\n'; return; }
		perf script -i "$TMP/perf.data" -F comm,ip,sym 2>/dev/null |
			awk -v f="$KA_PERF_FREQ" -v s="$KA_SECONDS" 'BEGIN {RS = ""}
				/tcp_keepalive_timer/ {ka++; next}
				/net_rx_action/ {rx++}
				END {printf "%.1f\t%.1f\n", ka * 1000 / f / s, rx * 1000 / f / s}'
		rm -f "$TMP/perf.data"
	}

	"$TMP/idleconns" server -listen "$HOST:$PORT_PEER" >"$TMP/peer.log" 2>&1 &
	PEER=$!
	PIDS+=("$PEER")
	wait_listen "$PORT_PEER" "$PEER" "idleconns server"

	read -r -a settings <<<"$KA_SETTINGS"
	for ((round = 1; round <= KA_ROUNDS; round++)); do
		for ((k = 0; k < ${#settings[@]}; k++)); do
			setting=${settings[$(((k + round - 1) % ${#settings[@]}))]}
			IFS=: read -r name idle intvl cnt ut <<<"$setting"
			cat >"$TMP/pgfront.yaml" <<EOF
log: {level: warn}
maxconn: 30000
admin: {listen: ""}
tcp: {keepalive_idle: ${idle}s, keepalive_interval: ${intvl}s, keepalive_count: $cnt, user_timeout: ${ut}s}
clusters:
  bench:
    health: {check: none}
    servers: [{name: peer, address: "$HOST:$PORT_PEER", role: primary}]
routes:
  bench: {listen: "$HOST:$PORT_ROUTE", cluster: bench, role: primary}
EOF
			"$TMP/pgfront" run -c "$TMP/pgfront.yaml" >>"$TMP/pgfront.log" 2>&1 &
			pid=$!
			PIDS+=("$pid")
			wait_listen "$PORT_ROUTE" "$pid" pgfront
			"$TMP/idleconns" clients -addr "$HOST:$PORT_ROUTE" -n "$N" -parallel "$KA_PARALLEL" >"$TMP/clients.out" 2>&1 &
			cpid=$!
			PIDS+=("$cpid")
			for ((i = 0; i < 2400; i++)); do
				grep -q '^ready' "$TMP/clients.out" && break
				kill -0 "$cpid" 2>/dev/null || { cat "$TMP/clients.out" >&2; die "idleconns clients failed"; }
				sleep 0.05
			done
			grep -q '^ready' "$TMP/clients.out" || { cat "$TMP/clients.out" >&2; die "$N sessions not ready within 120 s (after $i polls)"; }
			sleep "$KA_SETTLE"

			p0=$(probes) l0=$(lo_packets) d0=$(backlog_drops) c0=$(cpu_ticks "$pid") t0=$(date +%s%N)
			window
			p1=$(probes) l1=$(lo_packets) d1=$(backlog_drops) c1=$(cpu_ticks "$pid") t1=$(date +%s%N)
			kill -0 "$pid" 2>/dev/null || die "pgfront exited during the window; see $TMP/pgfront.log"
			awk -v n="$name" -v r="$round" -v s="$setting" -v N="$N" -v dt="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" \
				-v p="$((p1 - p0))" -v l="$((l1 - l0))" -v c="$((c1 - c0))" -v k="$(kernel_ms)" -v d="$((d1 - d0))" \
				'BEGIN {sec = dt / 1e9; printf "%s\t%d\t%s\t%d\t%.0f\t%.0f\t%.1f\t%s\t%.0f\n", n, r, s, N, p / sec, l / sec, c * 1000 / hz / sec, k, d / sec}' \
				>>"$TMP/results.tsv"
			log "round $round $name: $(tail -1 "$TMP/results.tsv" | cut -f5-10 | tr '\t' ' ') (probes/s, lo packets/s, pgfront ms/s, probe-sending ms/s, net-receive ms/s, backlog drops/s)"
			stop_pid "$cpid"
			stop_pid "$pid"
		done
	done
	exit 0
fi

# ---- the parent: build, namespace, table ----------------------------------------------------
TMP=""
NS=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	[ -n "$NS" ] && ip netns del "$NS" 2>/dev/null
	[ -n "$TMP" ] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT INT TERM

for tool in ss awk; do command -v "$tool" >/dev/null || die "$tool is needed"; done
TMP=$(mktemp -d /tmp/pgfront-keepalive.XXXXXX)
log "building pgfront and idleconns"
(cd "$REPO" && go build -o "$TMP/pgfront" ./cmd/pgfront && go build -o "$TMP/idleconns" ./bench/idleconns) >&2 || die "build failed"
: >"$TMP/results.tsv"

where="the current network namespace (other loopback traffic is counted too)"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns add "pgfront-bench-$$" 2>/dev/null; then
	NS="pgfront-bench-$$"
	ip -n "$NS" link set lo up
	where="a network namespace of its own"
	log "measuring in network namespace $NS"
	ip netns exec "$NS" env KA_CHILD="$TMP" bash "${BASH_SOURCE[0]}"
else
	log "measuring in the current network namespace (not root, or ip netns unavailable)"
	KA_CHILD="$TMP" bash "${BASH_SOURCE[0]}"
fi

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
# bound S: how long a vanished peer can hold a session (config.TCPSide.VanishBound).
bound() {
	IFS=: read -r _ idle intvl _ ut <<<"$1"
	awk -v i="$idle" -v v="$intvl" -v u="$ut" 'BEGIN {
		if (i == 0 || u == 0) { print "unbounded"; exit }
		k = (u > i) ? int((u - i + v - 1) / v) : 1; if (k < 1) k = 1
		b = i + k * v; if (u > b) b = u; printf "%ds", b }'
}
N=$(awk 'NR == 1 {print $4}' "$TMP/results.tsv")
off_rx=$(awk -F'\t' '$1 == "off" {print $9}' "$TMP/results.tsv" | median)

echo "# pgfront keepalive cost: $N idle sessions ($((2 * N)) pgfront sockets), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), ${KA_ROUNDS} x ${KA_SECONDS}s, in $where"
echo
echo "| setting | keepalive_idle / interval / count, user_timeout | vanished peer given up within | probes/s (expected) | packets/s on lo | backlog drops/s | pgfront CPU ms/s | kernel: sending probes ms/s | kernel: network receive ms/s (over \`off\`) |"
echo "|---|---|---|---|---|---|---|---|---|"
read -r -a settings <<<"$KA_SETTINGS"
for setting in "${settings[@]}"; do
	IFS=: read -r name idle intvl cnt ut <<<"$setting"
	rows=$(awk -F'\t' -v n="$name" '$1 == n' "$TMP/results.tsv")
	probes=$(cut -f5 <<<"$rows" | median)
	pkts=$(cut -f6 <<<"$rows" | median)
	cpu=$(cut -f7 <<<"$rows" | median)
	send=$(cut -f8 <<<"$rows" | median)
	rx=$(cut -f9 <<<"$rows" | median)
	drops=$(cut -f10 <<<"$rows" | median)
	expected=$(awk -v i="$idle" -v n="$N" 'BEGIN {if (i == 0) print 0; else printf "%.0f", 2 * n / i}')
	over=$(awk -v a="$rx" -v b="$off_rx" 'BEGIN {if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.1f", a - b}')
	echo "| $name | ${idle}s / ${intvl}s / $cnt, ${ut}s | $(bound "$setting") | $probes ($expected) | $pkts | $drops | $cpu | $send | $rx ($over) |"
done
