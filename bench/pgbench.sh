#!/usr/bin/env bash
# pgfront benchmark: direct PostgreSQL vs pgfront vs HAProxy 2.6 (TCP mode), all on loopback.
#
#   bash bench/pgbench.sh                              # full run: 3 rounds x 10 s per measurement
#   BENCH_SECONDS=5 BENCH_ROUNDS=1 bash bench/pgbench.sh   # quick run
#
# It builds pgfront and bench/idleconns, installs Debian's haproxy if absent, starts a
# throw-away PostgreSQL 15 (initdb in a temp dir), its own pgfront and haproxy processes,
# and measures:
#   1. pgbench -S (select-only) TPS, average latency and proxy CPU per 1,000 transactions
#      at 1, 16 and 64 clients; targets interleaved, order rotated each round;
#   2. pgbench -S -C (a new connection per transaction): TPS and proxy CPU per 1,000;
#      for both, the proxy's CPU migrations and context switches per 1,000;
#   3. COPY ... TO STDOUT of BENCH_COPY_MB MiB through each target: throughput and proxy CPU;
#   4. proxy resident memory per idle session at 1,000 and 10,000 sessions, against a
#      scripted PostgreSQL peer (bench/idleconns), a fresh proxy process per measurement.
# The table goes to stdout, progress to stderr. Everything it started is stopped and its
# temp dir removed on exit, error or Ctrl-C. See bench/README.md for what each figure means.
#
# Settings (environment):
#   BENCH_SECONDS=10        length of each pgbench run
#   BENCH_ROUNDS=3          rounds; each round runs every target once per measurement
#   BENCH_CLIENTS="1 16 64" client counts for the select-only runs
#   BENCH_CHURN_CLIENTS=8   clients for the -C (connection churn) runs
#   BENCH_SCALE=10          pgbench scale factor
#   BENCH_WARMUP=3          seconds of unmeasured select-only load per target before round 1
#   BENCH_COPY_MB=1024      size of the COPY TO STDOUT result per run (0 skips the COPY test)
#   BENCH_IDLE="1000 10000" idle session counts (0 or "" skips the memory test)
#   BENCH_IDLE_SETTLE=2     seconds between the last idle session's login and the RSS reading;
#                           150 lets Go's periodic GC (every 2 min) and scavenger return the
#                           memory of the connection burst: pgfront's steady state
#   BENCH_PGFRONT_PROCS=    GOMAXPROCS for pgfront (empty: Go's default, one per CPU)
#   BENCH_PORT_BASE=25432   first of six consecutive loopback ports used
#   PGBIN=/usr/lib/postgresql/15/bin
set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
BENCH_CHURN_CLIENTS=${BENCH_CHURN_CLIENTS:-8}
BENCH_SCALE=${BENCH_SCALE:-10}
BENCH_WARMUP=${BENCH_WARMUP:-3}
BENCH_COPY_MB=${BENCH_COPY_MB:-1024}
BENCH_IDLE=${BENCH_IDLE-"1000 10000"}
BENCH_IDLE_SETTLE=${BENCH_IDLE_SETTLE:-2}
BENCH_PGFRONT_PROCS=${BENCH_PGFRONT_PROCS:-}
BENCH_PORT_BASE=${BENCH_PORT_BASE:-25432}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HOST=127.0.0.1

PORT_PG=$BENCH_PORT_BASE
PORT_PGFRONT=$((BENCH_PORT_BASE + 1))
PORT_HAPROXY=$((BENCH_PORT_BASE + 2))
PORT_PEER=$((BENCH_PORT_BASE + 3))
PORT_IDLE_PGFRONT=$((BENCH_PORT_BASE + 4))
PORT_IDLE_HAPROXY=$((BENCH_PORT_BASE + 5))

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

BENCH_TAG=bench
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------- cleanup

TMP=""
PIDS=()          # background processes we started (pgfront, idleconns); stopped on exit
HAPIDFILES=()    # pidfiles of our haproxy daemons
PG_STARTED=0

cleanup() {
	local rc=$? pid f
	trap - EXIT INT TERM
	set +e
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	for f in "${HAPIDFILES[@]}"; do
		[ -s "$f" ] && stop_pid "$(cat "$f")"
	done
	stop_pg
	[ -n "$TMP" ] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# ---------------------------------------------------------------- setup

find_pg_tools

if ! command -v haproxy >/dev/null; then
	install_pkg haproxy
fi
HAPROXY=$(command -v haproxy)

for p in "$PORT_PG" "$PORT_PGFRONT" "$PORT_HAPROXY" "$PORT_PEER" "$PORT_IDLE_PGFRONT" "$PORT_IDLE_HAPROXY"; do
	port_free "$p" || die "port $HOST:$p is in use; set BENCH_PORT_BASE"
done

TMP=$(mktemp -d /tmp/pgfront-bench.XXXXXX)
chmod 755 "$TMP"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log "building pgfront and idleconns"
(cd "$REPO" && go build -o "$TMP/pgfront" ./cmd/pgfront && go build -o "$TMP/idleconns" ./bench/idleconns) >&2 ||
	die "build failed"

# Open files: every proxied session holds two sockets in the proxy. Raise the soft limit
# to the hard one (raising the hard limit needs CAP_SYS_RESOURCE; try, then live with it).
ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
# HAProxy refuses to start when maxconn needs more fds than it may open (2*maxconn + ~20).
HA_MAXCONN=30000
((2 * HA_MAXCONN + 64 > NOFILE)) && HA_MAXCONN=$(((NOFILE - 64) / 2))
# The most idle sessions a proxy can hold here: 2 fds each plus its own few.
IDLE_CAP=$(((NOFILE - 100) / 2))

# ---------------------------------------------------------------- PostgreSQL

log "starting PostgreSQL on $HOST:$PORT_PG (initdb in $TMP/pg)"
start_pg "pgfront bench" "shared_buffers = 256MB"

log "pgbench -i -s $BENCH_SCALE"
"$PGBENCH" -i -q -s "$BENCH_SCALE" -h "$HOST" -p "$PORT_PG" -U "$PGUSER_NAME" postgres >"$TMP/init.log" 2>&1 ||
	{ cat "$TMP/init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------- proxies

# pgfront: default timeouts; log level warn, because at info pgfront writes one line per
# session end, which under -C churn would be thousands of lines a second of disk I/O.
write_pgfront_config() { # file listen-port server-port
	cat >"$1" <<EOF
log: {level: warn}
admin: {listen: "$HOST:0"} # metrics and socket sampling on, as in production; any free port
maxconn: 30000
clusters:
  bench:
    health: {check: none} # like the HAProxy config: no health checks in the way
    servers:
      - name: pg
        address: $HOST:$3
        role: primary
routes:
  bench:
    listen: $HOST:$2
    cluster: bench
    role: primary
EOF
}

# HAProxy 2.6 as in the classic Patroni setup, TCP mode. nbthread is left at its default:
# one thread per CPU the process may run on (2 on a 2-core machine), like Go's GOMAXPROCS.
# No log lines (no "log" directive), no health checks.
write_haproxy_config() { # file listen-port server-port
	cat >"$1" <<EOF
global
    maxconn $HA_MAXCONN
defaults
    mode tcp
    maxconn $HA_MAXCONN
    timeout connect 5s
    timeout client 30m
    timeout server 30m
frontend fe
    bind $HOST:$2
    default_backend be
backend be
    server pg $HOST:$3
EOF
}

start_pgfront() { # config port -> sets REPLY to the pid
	if [ -n "$BENCH_PGFRONT_PROCS" ]; then
		GOMAXPROCS=$BENCH_PGFRONT_PROCS "$TMP/pgfront" run -c "$1" >>"$TMP/pgfront.log" 2>&1 &
	else
		"$TMP/pgfront" run -c "$1" >>"$TMP/pgfront.log" 2>&1 &
	fi
	local pid=$!
	PIDS+=("$pid")
	wait_listen "$2" "$pid" pgfront
	REPLY=$pid
}

start_haproxy() { # config port -> sets REPLY to the pid
	local pidfile=${1%.cfg}.pid
	HAPIDFILES+=("$pidfile")
	"$HAPROXY" -q -f "$1" -p "$pidfile" -D >>"$TMP/haproxy.log" 2>&1 ||
		{ cat "$TMP/haproxy.log" >&2; die "haproxy did not start"; }
	local i
	for ((i = 0; i < 100; i++)); do
		[ -s "$pidfile" ] && break
		sleep 0.05
	done
	REPLY=$(cat "$pidfile")
	wait_listen "$2" "$REPLY" haproxy
}

write_pgfront_config "$TMP/pgfront.yaml" "$PORT_PGFRONT" "$PORT_PG"
write_haproxy_config "$TMP/haproxy.cfg" "$PORT_HAPROXY" "$PORT_PG"
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" >&2 || die "haproxy config check failed"
start_pgfront "$TMP/pgfront.yaml" "$PORT_PGFRONT"
PGFRONT_PID=$REPLY
start_haproxy "$TMP/haproxy.cfg" "$PORT_HAPROXY"
HAPROXY_PID=$REPLY
HA_THREADS=$(awk '/^Threads:/{print $2}' "/proc/$HAPROXY_PID/status")
log "pgfront pid $PGFRONT_PID on :$PORT_PGFRONT, haproxy pid $HAPROXY_PID ($HA_THREADS threads) on :$PORT_HAPROXY"

# ---------------------------------------------------------------- pgbench runs

TARGETS=(direct pgfront haproxy)
target_port() { case $1 in direct) echo "$PORT_PG" ;; pgfront) echo "$PORT_PGFRONT" ;; haproxy) echo "$PORT_HAPROXY" ;; esac; }
target_pid() { case $1 in direct) echo "" ;; pgfront) echo "$PGFRONT_PID" ;; haproxy) echo "$HAPROXY_PID" ;; esac; }

RESULTS=$TMP/results.tsv # mode target clients round tps latency_ms transactions cpu_ticks p99_ms migrations voluntary involuntary
: >"$RESULTS"

# run_pgbench mode target clients seconds [round]: one pgbench run; with a round, records it.
run_pgbench() {
	local mode=$1 target=$2 clients=$3 secs=$4 round=${5:-} port pid jobs c0=0 c1=0 out
	local s0="0 0 0" s1="0 0 0"
	local -a extra=()
	port=$(target_port "$target")
	pid=$(target_pid "$target")
	jobs=$((clients < 2 ? clients : 2))
	[ "$mode" = churn ] && extra=(-C)
	# Select-only runs log every transaction's latency (pgbench -l) for the p99.
	local lp="$TMP/lat-$mode-$target-$clients-${round:-w}"
	[ "$mode" = select ] && [ -n "$round" ] && extra+=(-l "--log-prefix=$lp")
	[ -n "$pid" ] && c0=$(cpu_ticks "$pid") && s0=$(sched_counts "$pid")
	local rc=0
	out=$("$PGBENCH" -n -S "${extra[@]}" -c "$clients" -j "$jobs" -T "$secs" \
		-h "$HOST" -p "$port" -U "$PGUSER_NAME" postgres 2>&1) || rc=$?
	if ((rc >= 128)); then
		log "pgbench killed by signal $((rc - 128))"
		exit "$rc"
	elif ((rc != 0)); then
		printf '%s\n' "$out" >&2
		die "pgbench failed: $mode $target $clients clients"
	fi
	[ -n "$pid" ] && c1=$(cpu_ticks "$pid") && s1=$(sched_counts "$pid")
	[ -z "$round" ] && return 0
	local tps lat tx
	tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
	lat=$(awk '/^latency average = /{print $4; exit}' <<<"$out")
	tx=$(awk '/^number of transactions actually processed:/{print $6; exit}' <<<"$out")
	if [ -z "$tps" ] || [ -z "$lat" ] || [ -z "$tx" ]; then
		printf '%s\n' "$out" >&2
		die "cannot parse pgbench output"
	fi
	local p99=-
	if compgen -G "$lp.*" >/dev/null; then
		# Column 3 of pgbench's per-transaction log is the latency in microseconds.
		p99=$(cat "$lp".* | awk '{print $3}' | sort -n | awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000}')
		rm -f "$lp".*
	fi
	local sched
	sched=$(awk '{if ($1 == "-" || $4 == "-") m = "-"; else m = $4 - $1; printf "%s\t%d\t%d", m, $5 - $2, $6 - $3}' <<<"$s0 $s1")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$target" "$clients" "$round" "$tps" "$lat" "$tx" "$((c1 - c0))" "$p99" "$sched" >>"$RESULTS"
	log "round $round $mode $target c=$clients: tps $tps, latency $lat ms, proxy cpu $((c1 - c0)) ticks"
}

if ((BENCH_WARMUP > 0)); then
	log "warm-up: ${BENCH_WARMUP}s select-only at 16 clients per target"
	for t in "${TARGETS[@]}"; do run_pgbench select "$t" 16 "$BENCH_WARMUP"; done
fi

# Interleave: within a round every target runs once per measurement, and the order of the
# targets rotates from round to round so no target always runs first or last.
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	order=()
	for ((i = 0; i < ${#TARGETS[@]}; i++)); do order+=("${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}"); done
	for c in $BENCH_CLIENTS; do
		for t in "${order[@]}"; do run_pgbench select "$t" "$c" "$BENCH_SECONDS" "$r"; done
	done
	for t in "${order[@]}"; do run_pgbench churn "$t" "$BENCH_CHURN_CLIENTS" "$BENCH_SECONDS" "$r"; done
done

# ---------------------------------------------------------------- COPY TO STDOUT

COPY_RESULTS=$TMP/copy.tsv # target round bytes seconds cpu_ticks
: >"$COPY_RESULTS"

# run_copy target round: one COPY of BENCH_COPY_MB MiB (rows of 1 KiB) to /dev/null.
run_copy() {
	local target=$1 round=$2 port pid c0=0 c1=0 t0 t1 rows bytes
	port=$(target_port "$target")
	pid=$(target_pid "$target")
	rows=$((BENCH_COPY_MB * 1024))
	[ -n "$pid" ] && c0=$(cpu_ticks "$pid")
	t0=$(date +%s.%N)
	bytes=$("$PSQL" -X -q -h "$HOST" -p "$port" -U "$PGUSER_NAME" -d postgres \
		-c "COPY (SELECT repeat('x', 1023) FROM generate_series(1, $rows)) TO STDOUT" | wc -c) ||
		die "COPY through $target failed"
	t1=$(date +%s.%N)
	[ -n "$pid" ] && c1=$(cpu_ticks "$pid")
	printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$bytes" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$((c1 - c0))" >>"$COPY_RESULTS"
	log "round $round copy $target: $bytes bytes in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s, proxy cpu $((c1 - c0)) ticks"
}

if ((BENCH_COPY_MB > 0)); then
	for ((r = 1; r <= BENCH_ROUNDS; r++)); do
		order=()
		for ((i = 0; i < ${#TARGETS[@]}; i++)); do order+=("${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}"); done
		for t in "${order[@]}"; do run_copy "$t" "$r"; done
	done
fi

stop_pid "$PGFRONT_PID"
stop_pid "$HAPROXY_PID"

# ---------------------------------------------------------------- idle sessions

IDLE_RESULTS=$TMP/idle.tsv # proxy requested actual baseline_kib rss_kib
: >"$IDLE_RESULTS"

# idle_measure proxy n: fresh proxy in front of the scripted peer, RSS before and with n
# idle sessions held.
idle_measure() {
	local proxy=$1 want=$2 n pid port base rss cpid out=$TMP/idleclients.out i
	n=$((want < IDLE_CAP ? want : IDLE_CAP))
	if [ "$proxy" = pgfront ]; then
		write_pgfront_config "$TMP/idle-pgfront.yaml" "$PORT_IDLE_PGFRONT" "$PORT_PEER"
		start_pgfront "$TMP/idle-pgfront.yaml" "$PORT_IDLE_PGFRONT"
		port=$PORT_IDLE_PGFRONT
	else
		write_haproxy_config "$TMP/idle-haproxy-$want.cfg" "$PORT_IDLE_HAPROXY" "$PORT_PEER"
		start_haproxy "$TMP/idle-haproxy-$want.cfg" "$PORT_IDLE_HAPROXY"
		port=$PORT_IDLE_HAPROXY
	fi
	pid=$REPLY
	sleep 1
	base=$(rss_kib "$pid")
	: >"$out"
	"$TMP/idleconns" clients -addr "$HOST:$port" -n "$n" >"$out" 2>&1 &
	cpid=$!
	PIDS+=("$cpid")
	for ((i = 0; i < 1200; i++)); do
		grep -q '^ready' "$out" && break
		kill -0 "$cpid" 2>/dev/null || { cat "$out" >&2; die "idleconns clients failed through $proxy"; }
		sleep 0.05
	done
	grep -q '^ready' "$out" || die "idleconns clients: $n sessions through $proxy not ready within 60 s"
	sleep "$BENCH_IDLE_SETTLE" # let the last sessions settle (see BENCH_IDLE_SETTLE)
	rss=$(rss_kib "$pid")
	printf '%s\t%s\t%s\t%s\t%s\n' "$proxy" "$want" "$n" "$base" "$rss" >>"$IDLE_RESULTS"
	log "idle $proxy n=$n: RSS $base KiB -> $rss KiB"
	stop_pid "$cpid"
	stop_pid "$pid"
}

if [ -n "${BENCH_IDLE// /}" ] && [ "$BENCH_IDLE" != 0 ]; then
	"$TMP/idleconns" server -listen "$HOST:$PORT_PEER" >"$TMP/idleserver.log" 2>&1 &
	PEER_PID=$!
	PIDS+=("$PEER_PID")
	wait_listen "$PORT_PEER" "$PEER_PID" "idleconns server"
	for n in $BENCH_IDLE; do
		for p in pgfront haproxy; do idle_measure "$p" "$n"; done
	done
	stop_pid "$PEER_PID"
fi

# ---------------------------------------------------------------- report

CLK_TCK=$(getconf CLK_TCK)

echo
echo "pgfront benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r);" \
	"load average (1/5/15 min) at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$PG_VERSION, $("$HAPROXY" -v | head -1 | awk '{print "HAProxy", $3}') (nbthread default = $HA_THREADS threads, maxconn $HA_MAXCONN), pgfront GOMAXPROCS ${BENCH_PGFRONT_PROCS:-default = $(nproc)}"
echo "pgbench -S scale $BENCH_SCALE, simple protocol, over TCP on $HOST; $BENCH_ROUNDS round(s) x ${BENCH_SECONDS}s per cell, targets interleaved"
echo "TPS and latency: mean over rounds; +/-: half the min-max TPS spread over rounds, % of the mean; CPU: proxy utime+stime per 1,000 transactions, all rounds pooled"

awk -F'\t' -v tck="$CLK_TCK" -v clients="$BENCH_CLIENTS" -v churn="$BENCH_CHURN_CLIENTS" '
function cell(m, t, c) { return m SUBSEP t SUBSEP c }
{
	k = cell($1, $2, $3)
	n[k]++; tps[k] += $5; lat[k] += $6; tx[k] += $7; cpu[k] += $8
	if (!(k in lo) || $5 < lo[k]) lo[k] = $5
	if (!(k in hi) || $5 > hi[k]) hi[k] = $5
}
function mtps(k) { return n[k] ? tps[k] / n[k] : 0 }
function spread(k) { return (n[k] && mtps(k) > 0) ? 50 * (hi[k] - lo[k]) / mtps(k) : 0 }
function cpuk(k) { return tx[k] ? (cpu[k] / tck * 1000) / tx[k] * 1000 : 0 }
function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "-" }
function row(m, c,    d, p, h) {
	d = cell(m, "direct", c); p = cell(m, "pgfront", c); h = cell(m, "haproxy", c)
	printf "%7s | %8.0f %3.0f%% %7.3f | %8.0f %3.0f%% %7.3f | %8.0f %3.0f%% %7.3f | %7s %7s | %7.1f %7.1f %6s\n", \
		c, mtps(d), spread(d), lat[d] / n[d], mtps(p), spread(p), lat[p] / n[p], mtps(h), spread(h), lat[h] / n[h], \
		ratio(mtps(p), mtps(d)), ratio(mtps(p), mtps(h)), cpuk(p), cpuk(h), ratio(cpuk(p), cpuk(h))
}
function header(title) {
	print ""
	print title
	print "        |         direct          |         pgfront         |         HAProxy         | TPS pgfront/    | proxy CPU ms / 1k tx"
	print "clients |      TPS  +/-   lat ms |      TPS  +/-   lat ms |      TPS  +/-   lat ms |  direct HAProxy | pgfront HAProxy  ratio"
	print "--------+-------------------------+-------------------------+-------------------------+-----------------+-----------------------"
}
END {
	header("Select-only (pgbench -S)")
	nc = split(clients, cs, " ")
	for (i = 1; i <= nc; i++) row("select", cs[i])
	header("Connection churn (pgbench -S -C: a new connection per transaction; lat includes the connection)")
	row("churn", churn)
}' "$RESULTS"

echo
echo "Select-only p99 latency (ms, every transaction logged by pgbench -l; mean of the rounds' p99) and what each proxy adds over direct"
echo "clients |  direct  pgfront  HAProxy | added: pgfront  HAProxy   ratio"
echo "--------+----------------------------+--------------------------------"
awk -F'\t' -v clients="$BENCH_CLIENTS" '
$1 == "select" && $9 != "-" { k = $2 SUBSEP $3; n[k]++; p[k] += $9 }
function m(t, c,    k) { k = t SUBSEP c; return n[k] ? p[k] / n[k] : 0 }
END {
	nc = split(clients, cs, " ")
	for (i = 1; i <= nc; i++) {
		c = cs[i]; d = m("direct", c); pf = m("pgfront", c); h = m("haproxy", c)
		printf "%7s | %7.3f  %7.3f  %7.3f |        %7.3f  %7.3f  %6s\n", c, d, pf, h, pf - d, h - d, \
			(h - d > 0 ? sprintf("%.2f", (pf - d) / (h - d)) : "-")
	}
}' "$RESULTS"

echo
echo "Proxy scheduling, select-only and churn: per 1,000 transactions, all rounds pooled, summed over the proxy's threads:"
echo "CPU migrations (a thread woken on another CPU than it last ran on) and voluntary / involuntary context switches"
echo "  mode clients |  pgfront: migr    vol  invol |  HAProxy: migr    vol  invol"
echo "---------------+-------------------------------+------------------------------"
awk -F'\t' -v clients="$BENCH_CLIENTS" -v churn="$BENCH_CHURN_CLIENTS" '
$2 != "direct" { k = $1 SUBSEP $2 SUBSEP $3; tx[k] += $7; v[k] += $11; iv[k] += $12; if ($10 == "-") nomig[k] = 1; else mg[k] += $10 }
function per(x, k) { return tx[k] ? sprintf("%6.1f", x * 1000 / tx[k]) : "     -" }
function cells(m, t, c,    k) { k = m SUBSEP t SUBSEP c; return ((k in nomig) ? "     -" : per(mg[k], k)) " " per(v[k], k) " " per(iv[k], k) }
function row(m, c) { printf "%6s %7s |          %s |          %s\n", m, c, cells(m, "pgfront", c), cells(m, "haproxy", c) }
END {
	nc = split(clients, cs, " ")
	for (i = 1; i <= nc; i++) row("select", cs[i])
	row("churn", churn)
}' "$RESULTS"

if [ -s "$COPY_RESULTS" ]; then
	echo
	echo "COPY (SELECT 1 KiB rows) TO STDOUT, $BENCH_COPY_MB MiB per run into /dev/null: MiB/s mean over rounds (min-max), proxy CPU ms per GiB"
	echo "   target |   MiB/s (  min -   max) | x direct | proxy CPU ms/GiB"
	echo "----------+-------------------------+----------+-----------------"
	awk -F'\t' -v tck="$CLK_TCK" '
	{ t = $1; r = $3 / 1048576 / $4; n[t]++; sum[t] += r; if (!(t in lo) || r < lo[t]) lo[t] = r; if (!(t in hi) || r > hi[t]) hi[t] = r
	  bytes[t] += $3; cpu[t] += $5 }
	END {
		split("direct pgfront haproxy", ts, " ")
		d = n["direct"] ? sum["direct"] / n["direct"] : 0
		for (i = 1; i <= 3; i++) {
			t = ts[i]; if (!n[t]) continue
			m = sum[t] / n[t]
			c = (t == "direct") ? "-" : sprintf("%.0f", cpu[t] / tck * 1000 / (bytes[t] / 1073741824))
			printf "%9s | %7.0f (%5.0f - %5.0f) | %8s | %15s\n", t, m, lo[t], hi[t], (d > 0 ? sprintf("%.2f", m / d) : "-"), c
		}
	}' "$COPY_RESULTS"
fi

if [ -s "$IDLE_RESULTS" ]; then
	echo
	echo "Resident memory per idle session ((VmRSS ${BENCH_IDLE_SETTLE}s after N sessions logged in - VmRSS before) / N; fresh proxy per line; scripted PostgreSQL peer)"
	echo "   sessions |  pgfront: before    with N   KiB/session |  HAProxy: before    with N   KiB/session | pgfront/HAProxy"
	echo "------------+------------------------------------------+------------------------------------------+----------------"
	awk -F'\t' '
	{ k = $2; n[k] = $3; b[k, $1] = $4; r[k, $1] = $5; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
	function per(k, p) { return (r[k, p] - b[k, p]) / n[k] }
	END {
		for (i = 1; i <= m; i++) {
			k = order[i]
			label = n[k]; if (n[k] != k) label = n[k] "*"
			pp = per(k, "pgfront"); hh = per(k, "haproxy")
			printf "%11s | %13.1f MiB %7.1f MiB %8.1f   | %13.1f MiB %7.1f MiB %8.1f   | %10s\n", label, \
				b[k, "pgfront"] / 1024, r[k, "pgfront"] / 1024, pp, b[k, "haproxy"] / 1024, r[k, "haproxy"] / 1024, hh, \
				(hh > 0 ? sprintf("%.2f", pp / hh) : "-")
		}
	}' "$IDLE_RESULTS"
	if awk -F'\t' '$2 != $3 { found = 1 } END { exit !found }' "$IDLE_RESULTS"; then
		echo "* fewer than asked: the open-files limit here is $NOFILE and each proxied session holds 2 sockets in the proxy,"
		echo "  so at most $IDLE_CAP sessions fit (raising the hard limit needs CAP_SYS_RESOURCE)."
	fi
fi
if ((HA_MAXCONN < 30000)); then
	echo "note: HAProxy maxconn lowered from 30000 to $HA_MAXCONN: it refuses to start when 2*maxconn exceeds the open-files limit ($NOFILE)."
fi
