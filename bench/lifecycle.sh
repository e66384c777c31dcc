#!/usr/bin/env bash
# pgfront lifecycle benchmark: config reloads and binary upgrades under connection churn,
# against a real PostgreSQL on loopback, with HAProxy 2.6's reloads as a comparison.
#
#   bash bench/lifecycle.sh                      # one run, about 2 minutes
#   BENCH_HAPROXY=0 bash bench/lifecycle.sh      # pgfront only
#
# It builds pgfront into a temp dir, starts a throw-away PostgreSQL 15 (initdb in the temp
# dir) and `pgfront run -c FILE`, and measures:
#   a. connection failures under `pgbench -C` (a new connection per transaction) while
#      pgfront reloads its config BENCH_RELOADS times (SIGHUP after rewriting the file) and
#      while it is upgraded BENCH_UPGRADES times (a second `pgfront run -c FILE` takes the
#      listeners; the old one drains and exits), next to the same churn with nothing
#      happening; with HAProxy, the same churn across BENCH_RELOADS `haproxy -sf` reloads,
#      without and with `-x` (listening sockets passed over the stats socket);
#   b. how long a reload takes: from the `took` field of pgfront's "config reloaded" log
#      line, and from sending SIGHUP until `pgfront ctl config` shows the new generation;
#   c. an upgrade while a client holds a transaction of L seconds (BEGIN; SELECT pg_sleep(L);
#      COMMIT, then stays connected), for each L in BENCH_TX_SECONDS, and one while a client
#      runs 0.3 s transactions back to back on one connection: how long after the hand-over
#      the old process exits, next to what the drain rules give and shutdown.grace.
# The table goes to stdout, progress to stderr. Everything it started is stopped and its
# temp dir removed on exit, error or Ctrl-C. See bench/README.md for what each figure means.
#
# Settings (environment):
#   BENCH_RELOADS=10        reloads per reload phase (pgfront, and each HAProxy variant)
#   BENCH_UPGRADES=3        pgfront upgrades in the upgrade phase
#   BENCH_CLIENTS=8         pgbench -C clients
#   BENCH_BASELINE=5        seconds of churn with nothing happening, per proxy
#   BENCH_TX_SECONDS="1 5"  L: lengths of the transaction open across an upgrade, one upgrade each
#   BENCH_HAPROXY=1         0 = no HAProxy rows (1 installs Debian's haproxy if absent, as root)
#   BENCH_PORT_BASE=27432   PostgreSQL listens on this loopback port, HAProxy on the next;
#                           pgfront's listeners use ports the kernel picks (port 0)
#   PGBIN=/usr/lib/postgresql/15/bin
set -euo pipefail

BENCH_RELOADS=${BENCH_RELOADS:-10}
BENCH_UPGRADES=${BENCH_UPGRADES:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-8}
BENCH_BASELINE=${BENCH_BASELINE:-5}
BENCH_TX_SECONDS=${BENCH_TX_SECONDS:-"1 5"}
BENCH_HAPROXY=${BENCH_HAPROXY:-1}
BENCH_PORT_BASE=${BENCH_PORT_BASE:-27432}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HOST=127.0.0.1
GRACE=30 # shutdown.grace, seconds

PORT_PG=$BENCH_PORT_BASE
PORT_HAPROXY=$((BENCH_PORT_BASE + 1))

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

BENCH_TAG=lifecycle
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------- cleanup

TMP=""
PIDS=()       # background processes we started (pgfront processes, pgbench, psql); stopped on exit
HAPIDS=()     # every haproxy process we started (a reload starts a new one)
PG_STARTED=0

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	set +e
	for pid in "${PIDS[@]}" "${HAPIDS[@]}"; do stop_pid "$pid"; done
	stop_pg
	[ -n "$TMP" ] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# ---------------------------------------------------------------- setup

find_pg_tools
HAPROXY=""
if [ "$BENCH_HAPROXY" = 1 ]; then
	command -v haproxy >/dev/null || install_pkg haproxy
	HAPROXY=$(command -v haproxy)
	port_free "$PORT_HAPROXY" || die "port $HOST:$PORT_HAPROXY is in use; set BENCH_PORT_BASE"
fi
port_free "$PORT_PG" || die "port $HOST:$PORT_PG is in use; set BENCH_PORT_BASE"

TMP=$(mktemp -d /tmp/pgfront-lifecycle.XXXXXX)
chmod 755 "$TMP"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log "building pgfront"
(cd "$REPO" && go build -o "$TMP/pgfront" ./cmd/pgfront) >&2 || die "build failed"

log "starting PostgreSQL on $HOST:$PORT_PG (initdb in $TMP/pg)"
start_pg "pgfront lifecycle bench"
echo 'SELECT 1;' >"$TMP/select1.sql"

# ---------------------------------------------------------------- pgfront

CFG=$TMP/pgfront.yaml
# write_config VARIANT: the config file, rewritten in one rename. Odd variants add a route
# "extra" and lower client_idle (10m -> 9m) and the queue timeout (5s -> 6s): each reload
# adds or removes a listener and changes route settings. Log level info, JSON: the reload's
# "config reloaded" line (with took=) is an info line; pgfront also writes one line per
# session end, which this churn makes a few hundred a second of.
write_config() {
	local idle=10m queue=5s extra=""
	if (($1 % 2)); then
		idle=9m queue=6s
		extra="  extra: {listen: \"$HOST:0\", cluster: c, role: primary}"
	fi
	cat >"$CFG.new" <<EOF
log: {format: json, level: info}
admin: {listen: "$HOST:0"}
shutdown: {grace: ${GRACE}s}
maxconn: 1000
timeouts: {client_idle: $idle, queue: $queue}
clusters:
  c:
    health: {check: postgres, interval: 1s, fast_interval: 200ms, timeout: 900ms}
    servers:
      - {name: pg, address: "$HOST:$PORT_PG", role: primary}
routes:
  rw: {listen: "$HOST:0", cluster: c, role: primary}
$extra
EOF
	mv "$CFG.new" "$CFG"
}

# json_field FILE MSG FIELD: FIELD of the first log record with message MSG (strings unquoted).
json_field() {
	grep -m1 -F "\"msg\":\"$2\"" "$1" | sed -n "s/.*\"$3\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

# wait_log FILE MSG PID WHAT: poll until FILE has a record with message MSG (10 s at most).
wait_log() {
	local i
	for ((i = 0; i < 500; i++)); do
		grep -q -F "\"msg\":\"$2\"" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || { tail -20 "$1" >&2; die "$4 exited"; }
		sleep 0.02
	done
	die "$4: no \"$2\" within 10 s"
}

# ns_of RFC3339: nanoseconds since the epoch.
ns_of() { date -d "$1" +%s%N; }
now_ns() { date +%s%N; }
ms() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'; }

NPROC=0 # pgfront processes started
# start_pgfront: start `pgfront run -c $CFG`; sets CUR_PID and CUR_LOG.
start_pgfront() {
	NPROC=$((NPROC + 1))
	CUR_LOG=$TMP/pgfront-$NPROC.log
	# 3>&-: not a writer of the transaction client's input (below), which must see its end.
	"$TMP/pgfront" run -c "$CFG" 2>"$CUR_LOG" 3>&- &
	CUR_PID=$!
	PIDS+=("$CUR_PID")
	wait_log "$CUR_LOG" "admin listening" "$CUR_PID" "pgfront #$NPROC"
}

ctl() { "$TMP/pgfront" ctl -addr "http://$ADMIN" "$@"; }
generation() { ctl -json config | sed -n 's/.*"generation": *\([0-9]*\).*/\1/p'; }

# count_refused: pgfront's refused sessions ("session ended" lines with "refused":true) and
# "server connect failed" lines, all processes.
count_refused() { cat "$TMP"/pgfront-*.log | grep -c -E '"refused":true|"msg":"server connect failed"' || true; }

# ---------------------------------------------------------------- churn

PHASES=$TMP/phases.tsv # name events seconds tps tx failed aborted exit proxy_refused
: >"$PHASES"

# churn_start PORT SECONDS: pgbench -C in the background; sets CHURN_PID and CHURN_OUT.
churn_start() {
	CHURN_OUT=$TMP/pgbench-$(now_ns).out
	"$PGBENCH" -n -C -c "$BENCH_CLIENTS" -j 2 -T "$2" -f "$TMP/select1.sql" \
		-h "$HOST" -p "$1" -U "$PGUSER_NAME" postgres >"$CHURN_OUT" 2>&1 3>&- &
	CHURN_PID=$!
	PIDS+=("$CHURN_PID")
}

# churn_end NAME EVENTS SECONDS REFUSED: wait for pgbench and record its figures.
churn_end() {
	local rc=0 tps tx failed aborted
	wait "$CHURN_PID" || rc=$?
	((rc >= 128)) && die "pgbench killed by signal $((rc - 128))"
	tps=$(awk '/^tps = /{printf "%.0f", $3; exit}' "$CHURN_OUT")
	tx=$(awk '/^number of transactions actually processed:/{print $6; exit}' "$CHURN_OUT")
	failed=$(awk '/^number of failed transactions:/{print $5; exit}' "$CHURN_OUT")
	aborted=$(grep -c 'client [0-9]* aborted' "$CHURN_OUT" || true)
	if [ -z "$tx" ]; then
		cat "$CHURN_OUT" >&2
		die "cannot parse pgbench output ($1)"
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${tps:--}" "$tx" "${failed:--}" "$aborted" "$rc" "$4" >>"$PHASES"
	log "$1: tps ${tps:--}, $tx transactions, ${failed:--} failed, $aborted aborted clients, pgbench exit $rc"
	if ((aborted > 0 || rc != 0)); then
		grep -E 'aborted|error' "$CHURN_OUT" | head -5 >&2 || true
	fi
}

# ---------------------------------------------------------------- pgfront phases

write_config 0
start_pgfront
ADMIN=$(json_field "$CUR_LOG" "admin listening" addr)
RW=$(grep -F '"msg":"route listening"' "$CUR_LOG" | grep -F '"route":"rw"' | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p')
RW_PORT=${RW##*:}
[ -n "$ADMIN" ] && [ -n "$RW_PORT" ] || die "cannot read pgfront's addresses from its log"
log "pgfront pid $CUR_PID: route rw on $RW, admin on $ADMIN"

log "baseline: ${BENCH_BASELINE}s of churn through pgfront"
r0=$(count_refused)
churn_start "$RW_PORT" "$BENCH_BASELINE"
churn_end "pgfront, nothing happening" 0 "$BENCH_BASELINE" $(($(count_refused) - r0))

# (a, b) Reloads, one a second, under churn.
RELOADS=$TMP/reloads.tsv # took_ns sighup_to_ctl_ns
: >"$RELOADS"
secs=$((BENCH_RELOADS + 3))
log "$BENCH_RELOADS reloads, one a second, under ${secs}s of churn"
r0=$(count_refused)
churn_start "$RW_PORT" "$secs"
sleep 1
gen=$(generation)
for ((i = 1; i <= BENCH_RELOADS; i++)); do
	write_config "$i"
	t0=$(now_ns)
	kill -HUP "$CUR_PID"
	for ((k = 0; k < 1000; k++)); do
		g=$(generation)
		[ "$g" = $((gen + 1)) ] && break
		sleep 0.005
	done
	t1=$(now_ns)
	[ "$g" = $((gen + 1)) ] || die "reload $i: generation $g, want $((gen + 1))"
	gen=$g
	took=$(grep -F '"msg":"config reloaded"' "$CUR_LOG" | grep -F "\"generation\":$gen," | sed -n 's/.*"took":\([0-9]*\).*/\1/p')
	printf '%s\t%s\n' "${took:-0}" "$((t1 - t0))" >>"$RELOADS"
	log "reload $i: generation $gen, took $(ms "${took:-0}") ms, SIGHUP -> ctl config $(ms $((t1 - t0))) ms"
	sleep 0.9
done
churn_end "pgfront, $BENCH_RELOADS reloads (SIGHUP)" "$BENCH_RELOADS" "$secs" $(($(count_refused) - r0))

# (a) Upgrades under churn: a new `pgfront run` on the same file; the old one drains and exits.
UPGRADES=$TMP/upgrades.tsv # handover_to_exit_ns exit_status
: >"$UPGRADES"

# upgrade: start the next process, wait for the hand-over and the old process's exit; sets
# HANDOVER_NS (the new process's log time of the hand-over) and EXIT_NS (the old one's "stopped").
upgrade() {
	local old_pid=$CUR_PID old_log=$CUR_LOG status=0 i
	start_pgfront
	wait_log "$CUR_LOG" "took the listeners of the previous pgfront process; it drains" "$CUR_PID" "pgfront #$NPROC"
	for ((i = 0; i < (GRACE + 10) * 50; i++)); do
		kill -0 "$old_pid" 2>/dev/null || break
		sleep 0.02
	done
	kill -0 "$old_pid" 2>/dev/null && die "the old pgfront (pid $old_pid) still runs $((GRACE + 10))s after the hand-over"
	wait "$old_pid" || status=$?
	HANDOVER_NS=$(ns_of "$(json_field "$CUR_LOG" "took the listeners of the previous pgfront process; it drains" time)")
	EXIT_NS=$(ns_of "$(json_field "$old_log" "stopped" time)")
	EXIT_STATUS=$status
}

secs=$((BENCH_UPGRADES * 3 + 2))
log "$BENCH_UPGRADES upgrades, one every 3 s, under ${secs}s of churn"
r0=$(count_refused)
churn_start "$RW_PORT" "$secs"
sleep 1
for ((i = 1; i <= BENCH_UPGRADES; i++)); do
	t0=$(now_ns)
	upgrade
	printf '%s\t%s\n' "$((EXIT_NS - HANDOVER_NS))" "$EXIT_STATUS" >>"$UPGRADES"
	log "upgrade $i: pgfront #$NPROC took over; the old one exited with status $EXIT_STATUS $(ms $((EXIT_NS - HANDOVER_NS))) ms after the hand-over"
	rest=$((3000000000 - ($(now_ns) - t0)))
	((rest > 0)) && sleep "$(awk -v n="$rest" 'BEGIN { printf "%.3f", n / 1e9 }')"
done
churn_end "pgfront, $BENCH_UPGRADES upgrades (new process)" "$BENCH_UPGRADES" "$secs" $(($(count_refused) - r0))

# (c) Upgrades while a transaction of known length is open. The client (psql) sends BEGIN,
# SELECT pg_sleep(L), COMMIT, one statement at a time, COUNT times back to back, and stays
# connected. The old process ends its session at a COMMIT's boundary: after 500 ms of client
# quiet there, or at once if the drain has already lasted 2 s (drainBusy in internal/relay), and
# then exits. With COUNT 1 that is the one COMMIT; with more, the first boundary past 2 s.
TXS=$TMP/tx.tsv # L count began_before_handover_ns exit_after_handover_ns status
: >"$TXS"
tx_upgrade() { # L COUNT
	local L=$1 count=$2 n i
	log "upgrade during $count x ${L}s transaction(s), back to back"
	mkfifo "$TMP/tx-$L.in"
	"$PSQL" -X -q -h "$HOST" -p "$RW_PORT" -U "$PGUSER_NAME" postgres <"$TMP/tx-$L.in" >"$TMP/tx-$L.out" 2>&1 &
	TX_PID=$!
	PIDS+=("$TX_PID")
	exec 3>"$TMP/tx-$L.in" # psql reads its statements from here until it is closed
	for ((i = 0; i < count; i++)); do printf 'BEGIN;\nSELECT pg_sleep(%s);\nCOMMIT;\n' "$L"; done >&3
	for ((i = 0; i < 500; i++)); do
		n=$("$PSQL" -X -At -h "$HOST" -p "$PORT_PG" -U "$PGUSER_NAME" postgres \
			-c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'")
		[ "$n" = 1 ] && break
		sleep 0.02
	done
	[ "$n" = 1 ] || die "the ${L}s transaction did not start"
	local began
	began=$("$PSQL" -X -At -h "$HOST" -p "$PORT_PG" -U "$PGUSER_NAME" postgres \
		-c "SELECT (extract(epoch FROM xact_start) * 1e9)::bigint FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'")
	upgrade
	printf '%s\t%s\t%s\t%s\t%s\n' "$L" "$count" "$((HANDOVER_NS - began))" "$((EXIT_NS - HANDOVER_NS))" "$EXIT_STATUS" >>"$TXS"
	log "the old pgfront exited with status $EXIT_STATUS $(ms $((EXIT_NS - HANDOVER_NS))) ms after the hand-over"
	exec 3>&- # psql reads the end of its input and exits
	for ((i = 0; i < 250; i++)); do
		kill -0 "$TX_PID" 2>/dev/null || break
		sleep 0.02
	done
	stop_pid "$TX_PID"
}
for L in $BENCH_TX_SECONDS; do tx_upgrade "$L" 1; done
tx_upgrade 0.3 30 # a busy connection: never 500 ms of quiet

stop_pid "$CUR_PID"

# ---------------------------------------------------------------- HAProxy

if [ -n "$HAPROXY" ]; then
	HACFG=$TMP/haproxy.cfg
	HAPIDFILE=$TMP/haproxy.pid
	cat >"$HACFG" <<EOF
global
    maxconn 4000
    stats socket $TMP/haproxy.sock mode 600 level admin expose-fd listeners
defaults
    mode tcp
    timeout connect 5s
    timeout client 30m
    timeout server 30m
frontend fe
    bind $HOST:$PORT_HAPROXY
    default_backend be
backend be
    server pg $HOST:$PORT_PG
EOF
	"$HAPROXY" -c -q -f "$HACFG" >&2 || die "haproxy config check failed"
	# ha_start [ARGS...]: start a haproxy daemon (extra ARGS: -sf OLD, -x SOCKET) and wait
	# until its pidfile names a new process.
	ha_start() {
		local before="" i pid
		[ -s "$HAPIDFILE" ] && before=$(cat "$HAPIDFILE")
		"$HAPROXY" -q -f "$HACFG" -p "$HAPIDFILE" -D "$@" >>"$TMP/haproxy.log" 2>&1 ||
			{ cat "$TMP/haproxy.log" >&2; die "haproxy did not start"; }
		for ((i = 0; i < 200; i++)); do
			pid=$(cat "$HAPIDFILE" 2>/dev/null || true)
			[ -n "$pid" ] && [ "$pid" != "$before" ] && break
			sleep 0.02
		done
		[ -n "$pid" ] && [ "$pid" != "$before" ] || die "haproxy wrote no new pidfile"
		HAPIDS+=("$pid")
	}
	ha_start
	wait_listen "$PORT_HAPROXY" "$(cat "$HAPIDFILE")" haproxy
	HA_VERSION=$("$HAPROXY" -v | awk 'NR == 1 {print "HAProxy", $3}')

	log "baseline: ${BENCH_BASELINE}s of churn through HAProxy"
	churn_start "$PORT_HAPROXY" "$BENCH_BASELINE"
	churn_end "HAProxy, nothing happening" 0 "$BENCH_BASELINE" -

	for variant in sf x; do
		secs=$((BENCH_RELOADS + 3))
		log "$BENCH_RELOADS HAProxy reloads (-$variant), one a second, under ${secs}s of churn"
		churn_start "$PORT_HAPROXY" "$secs"
		sleep 1
		for ((i = 1; i <= BENCH_RELOADS; i++)); do
			if [ "$variant" = x ]; then
				ha_start -x "$TMP/haproxy.sock" -sf "$(cat "$HAPIDFILE")"
			else
				ha_start -sf "$(cat "$HAPIDFILE")"
			fi
			sleep 1
		done
		if [ "$variant" = x ]; then
			churn_end "HAProxy, $BENCH_RELOADS reloads (-x -sf)" "$BENCH_RELOADS" "$secs" -
		else
			churn_end "HAProxy, $BENCH_RELOADS reloads (-sf)" "$BENCH_RELOADS" "$secs" -
		fi
	done
fi

# ---------------------------------------------------------------- report

echo
echo "pgfront lifecycle benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r);" \
	"load average (1/5/15 min) at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$PG_VERSION${HA_VERSION:+, $HA_VERSION}; churn: pgbench -C -c $BENCH_CLIENTS -j 2, script 'SELECT 1;', over TCP on $HOST"
echo
echo "(a) Connection churn across reloads and upgrades (target: 0 failed, 0 aborted)"
echo "phase                                  | events |  secs |   TPS |    tx | failed tx | aborted clients | pgbench exit | pgfront refused"
echo "---------------------------------------+--------+-------+-------+-------+-----------+-----------------+--------------+----------------"
awk -F'\t' '{ printf "%-38s | %6s | %5s | %5s | %5s | %9s | %15s | %12s | %15s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$PHASES"
echo "(pgbench stops a client at its first failed connection: 'aborted clients' is a lower bound of the connections that failed)"
echo
echo "(b) Reload: SIGHUP to applied, over $BENCH_RELOADS reloads (route added or removed, timeouts changed)"
echo "measure                                          |    min ms | median ms |    max ms"
echo "-------------------------------------------------+-----------+-----------+----------"
stats() { # column of $RELOADS
	cut -f"$1" "$RELOADS" | sort -n | awk '{ v[NR] = $1 } END {
		med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%9.1f | %9.1f | %9.1f\n", v[1] / 1e6, med / 1e6, v[NR] / 1e6 }'
}
printf '%-48s | %s\n' "took= of the \"config reloaded\" log line" "$(stats 1)"
printf '%-48s | %s\n' "kill -HUP until ctl config shows the generation" "$(stats 2)"
echo
echo "Upgrades under churn: old process's exit after the hand-over (new process's log time of the"
echo "hand-over to the old one's \"stopped\"), exit statuses: $(cut -f2 "$UPGRADES" | paste -sd' ')"
cut -f1 "$UPGRADES" | sort -n | awk '{ v[NR] = $1 } END {
	printf "  min %.0f ms, median %.0f ms, max %.0f ms over %d upgrades\n", v[1] / 1e6, v[int((NR + 1) / 2)] / 1e6, v[NR] / 1e6, NR }'
echo
echo "(c) Upgrade while a client is in a transaction of L seconds (psql: BEGIN; SELECT pg_sleep(L); COMMIT; N times back to back, then stays connected)"
echo "     L s x N | began before hand-over s | old process exited after hand-over s | expected s | exit status"
echo "-------------+--------------------------+--------------------------------------+------------+------------"
awk -F'\t' '{
	if ($2 == 1) {
		c = $1 - $3 / 1e9          # the COMMIT, after the hand-over
		e = c + 0.5                # 500 ms of quiet at the boundary ...
		busy = c > 2 ? c : 2       # ... or at once once the drain has lasted 2 s
		if (busy < e) e = busy
		want = sprintf("%10.3f", e)
	} else {
		want = sprintf("2 to %.1f", 2 + $1)  # the first boundary past 2 s
	}
	printf "%12s | %24.3f | %36.3f | %10s | %s\n", $1 " x " $2, $3 / 1e9, $4 / 1e9, want, $5
}' "$TXS"
echo "  expected: the COMMIT + 500 ms of quiet, or the first COMMIT past 2 s into the drain if that comes first; shutdown.grace = ${GRACE}s"
