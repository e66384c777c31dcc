#!/usr/bin/env bash
# What pgfront's observability costs with many sessions open, on loopback.
#
#   bash bench/observe.sh                       # 1,000 and 10,000 idle sessions
#   OBS_SESSIONS="1000" bash bench/observe.sh   # quick run
#
# For each session count it starts a fresh pgfront in front of a scripted PostgreSQL peer
# (bench/idleconns; no real server needed), opens that many idle sessions, and measures:
#   1. one kernel sample of pgfront's socket states (sock_diag dump + attribution to routes
#      and servers), as pgfront itself reports it (pgfront_socket_sample_duration_seconds),
#      against `ss -tan` listing the same namespace's TCP sockets (what an operator would run);
#   2. one /metrics scrape: wall time, bytes, and pgfront CPU per scrape;
#   3. one /api/v1/overview read (what the stats page fetches every second): time, bytes;
#   4. pgfront's idle CPU per second with sampling every OBS_SAMPLE_INTERVAL;
# and the stats page's weight (its three embedded assets, raw and gzipped).
# The table goes to stdout, progress to stderr; everything started is stopped on exit.
#
# Settings (environment):
#   OBS_SESSIONS="1000 10000"  idle session counts (capped by the open-files limit: pgfront
#                              holds 2 descriptors per session)
#   OBS_SCRAPES=20             scrapes (and overview reads) per count
#   OBS_SAMPLES=10             socket samples read per count (one per sample interval)
#   OBS_SAMPLE_INTERVAL=1s     alerts.sample_interval of the measured pgfront
#   OBS_PORT_BASE=28432        first of three consecutive loopback ports used
set -euo pipefail

OBS_SESSIONS=${OBS_SESSIONS:-"1000 10000"}
OBS_SCRAPES=${OBS_SCRAPES:-20}
OBS_SAMPLES=${OBS_SAMPLES:-10}
OBS_SAMPLE_INTERVAL=${OBS_SAMPLE_INTERVAL:-1s}
OBS_PORT_BASE=${OBS_PORT_BASE:-28432}
HOST=127.0.0.1
PORT_PEER=$OBS_PORT_BASE
PORT_ROUTE=$((OBS_PORT_BASE + 1))
PORT_ADMIN=$((OBS_PORT_BASE + 2))

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

BENCH_TAG=observe
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

TMP=""
PIDS=()
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	set +e
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	[ -n "$TMP" ] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT INT TERM

for tool in ss curl gzip awk; do command -v "$tool" >/dev/null || die "$tool is needed"; done
for p in "$PORT_PEER" "$PORT_ROUTE" "$PORT_ADMIN"; do
	port_free "$p" || die "port $HOST:$p is in use; set OBS_PORT_BASE"
done
TICK_MS=$((1000 / $(getconf CLK_TCK)))
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
maxof() { sort -g | tail -1; }

TMP=$(mktemp -d /tmp/pgfront-observe.XXXXXX)
log "building pgfront and idleconns"
(cd "$REPO" && go build -o "$TMP/pgfront" ./cmd/pgfront && go build -o "$TMP/idleconns" ./bench/idleconns) >&2 || die "build failed"

ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
CAP=$(((NOFILE - 200) / 2))

"$TMP/idleconns" server -listen "$HOST:$PORT_PEER" >"$TMP/peer.log" 2>&1 &
PEER=$!
PIDS+=("$PEER")
wait_listen "$PORT_PEER" "$PEER" "idleconns server"

metric() { # name: the sample's value in a fresh scrape
	curl -sf -o "$TMP/metrics" "http://$HOST:$PORT_ADMIN/metrics" || return 0
	awk -v n="$1" '$1 == n {print $2}' "$TMP/metrics"
}

RESULTS=$TMP/results.tsv
: >"$RESULTS"
for want in $OBS_SESSIONS; do
	n=$((want < CAP ? want : CAP))
	cat >"$TMP/pgfront.yaml" <<EOF
log: {level: warn}
maxconn: 30000
admin: {listen: "$HOST:$PORT_ADMIN"}
alerts: {sample_interval: $OBS_SAMPLE_INTERVAL}
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
	wait_listen "$PORT_ADMIN" "$pid" pgfront
	"$TMP/idleconns" clients -addr "$HOST:$PORT_ROUTE" -n "$n" >"$TMP/clients.out" 2>&1 &
	cpid=$!
	PIDS+=("$cpid")
	for ((i = 0; i < 2400; i++)); do
		grep -q '^ready' "$TMP/clients.out" && break
		kill -0 "$cpid" 2>/dev/null || { cat "$TMP/clients.out" >&2; die "idleconns clients failed"; }
		sleep 0.05
	done
	grep -q '^ready' "$TMP/clients.out" || die "$n sessions not ready within 120 s"
	log "n=$n: sessions open; letting them park"
	sleep 4

	# 1. socket samples, as pgfront reports them, one per interval.
	: >"$TMP/samples"
	last=""
	for ((i = 0; i < OBS_SAMPLES * 20 && $(wc -l <"$TMP/samples") < OBS_SAMPLES; i++)); do
		ts=$(metric pgfront_socket_sample_timestamp_seconds)
		if [ -n "$ts" ] && [ "$ts" != "$last" ]; then
			last=$ts
			metric pgfront_socket_sample_duration_seconds | awk '{printf "%.3f\n", $1 * 1000}' >>"$TMP/samples"
		fi
		sleep 0.25
	done
	socks=$(ss -Htan | wc -l)
	: >"$TMP/ss"
	for ((i = 0; i < OBS_SAMPLES; i++)); do
		s=$(date +%s%N)
		ss -tan >/dev/null
		echo $((($(date +%s%N) - s) / 1000)) | awk '{printf "%.3f\n", $1 / 1000}' >>"$TMP/ss"
	done
	curl -sf -o "$TMP/metrics" "http://$HOST:$PORT_ADMIN/metrics"
	tracked=$(awk '$1 ~ /^pgfront_sockets\{/ {s += $2} END {print s + 0}' "$TMP/metrics")

	# 2. and 3. scrapes and overview reads; pgfront CPU across the scrapes.
	: >"$TMP/scrape"
	: >"$TMP/overview"
	c0=$(cpu_ticks "$pid")
	for ((i = 0; i < OBS_SCRAPES; i++)); do
		curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' "http://$HOST:$PORT_ADMIN/metrics" >>"$TMP/scrape"
	done
	c1=$(cpu_ticks "$pid")
	for ((i = 0; i < OBS_SCRAPES; i++)); do
		curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' "http://$HOST:$PORT_ADMIN/api/v1/overview" >>"$TMP/overview"
	done
	c2=$(cpu_ticks "$pid")

	# 4. idle CPU with sampling on.
	i0=$(cpu_ticks "$pid")
	sleep 10
	i1=$(cpu_ticks "$pid")

	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$socks" "$tracked" \
		"$(median <"$TMP/samples")" "$(maxof <"$TMP/samples")" "$(median <"$TMP/ss")" \
		"$(awk '{print $1 * 1000}' "$TMP/scrape" | median)" "$(awk '{print $2}' "$TMP/scrape" | median)" \
		"$(((c1 - c0) * TICK_MS * 1000 / OBS_SCRAPES))" \
		"$(awk '{print $1 * 1000}' "$TMP/overview" | median)" "$(awk '{print $2}' "$TMP/overview" | median)" \
		"$(((c2 - c1) * TICK_MS * 1000 / OBS_SCRAPES))" "$(((i1 - i0) * TICK_MS / 10))" >>"$RESULTS"
	log "n=$n done"
	stop_pid "$cpid"
	stop_pid "$pid"
done

# Page weight, from the last pgfront's binary (a fresh one: nothing else needed).
cat >"$TMP/page.yaml" <<EOF
admin: {listen: "$HOST:$PORT_ADMIN"}
clusters: {c: {health: {check: none}, servers: [{name: s, address: "$HOST:$PORT_PEER", role: primary}]}}
routes: {r: {listen: "$HOST:$PORT_ROUTE", cluster: c, role: primary}}
EOF
"$TMP/pgfront" run -c "$TMP/page.yaml" >>"$TMP/pgfront.log" 2>&1 &
pid=$!
PIDS+=("$pid")
wait_listen "$PORT_ADMIN" "$pid" pgfront
page_raw=0
page_gz=0
for path in / /static/app.js /static/style.css; do
	curl -sf "http://$HOST:$PORT_ADMIN$path" >"$TMP/asset"
	page_raw=$((page_raw + $(wc -c <"$TMP/asset")))
	page_gz=$((page_gz + $(gzip -9c "$TMP/asset" | wc -c)))
done
stop_pid "$pid"

echo "# pgfront observability cost ($(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), sample interval $OBS_SAMPLE_INTERVAL, $OBS_SCRAPES scrapes, $OBS_SAMPLES samples)"
echo
echo "| sessions | TCP sockets in namespace | pgfront sockets counted | socket sample ms (median / max) | \`ss -tan\` ms (median) | sample / ss | /metrics scrape ms | scrape bytes | pgfront CPU µs per scrape | overview ms | overview bytes | CPU µs per overview | idle CPU ms/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r n socks tracked smed smax ssmed scr scrb scrcpu ov ovb ovcpu idle; do
	ratio=$(awk -v a="$smed" -v b="$ssmed" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
	echo "| $n | $socks | $tracked | $smed / $smax | $ssmed | $ratio | $scr | $scrb | $scrcpu | $ov | $ovb | $ovcpu | $idle |"
done <"$RESULTS"
echo
echo "Stats page weight (/, /static/app.js, /static/style.css): $page_raw bytes, $page_gz bytes gzipped; it then fetches /api/v1/overview once a second."
