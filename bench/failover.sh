#!/usr/bin/env bash
# pgfront failover benchmark: write unavailability during a Patroni switchover and during
# the loss of the leader's node, through pgfront and through HAProxy 2.6 (configured as
# Patroni's documentation recommends), in the same run against the same real cluster.
#
#   bash bench/failover.sh             # one run, about a minute
#   BENCH_RUNS=2 bash bench/failover.sh  # several runs in a row, to see the spread
#
# It builds pgfront and bench/failover into a temp dir and runs bench/failover, which
# starts a throw-away 3-node Patroni cluster (etcd, Patroni, PostgreSQL 15 from Debian's
# packages), a pgfront and a haproxy process, two writers (one per proxy), a switchover
# and then a node loss. The report goes to stdout, progress to stderr. Everything it
# started is stopped, and its temp dirs removed, on exit, error or Ctrl-C (BENCH_KEEP=1
# keeps the work dir: configs, pgfront, haproxy and Patroni logs, every attempt as CSV).
# See bench/README.md for what each figure means.
#
# Settings (environment):
#   BENCH_RUNS=1            runs in a row, each with a fresh cluster and fresh proxies
#   BENCH_PORT_BASE=26432   pgfront listens on this loopback port, haproxy on the next
#   BENCH_KEEP=0            1 = keep each run's work dir (its path is printed on stderr)
#   BENCH_DCS=0             1 = pgfront follows Patroni's leader key from etcd (clusters.X.dcs)
#                           and the report splits the write gap into Patroni's and pgfront's share
#   HAPROXY=/usr/sbin/haproxy
set -euo pipefail

BENCH_RUNS=${BENCH_RUNS:-1}
BENCH_PORT_BASE=${BENCH_PORT_BASE:-26432}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_DCS=${BENCH_DCS:-0}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

log() { printf '[failover.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP=$(mktemp -d -t pgfront-failover-bin-XXXXXX)
BENCH_PID=""
cleanup() {
	# bench/failover stops its own children (cluster, pgfront, haproxy) on SIGTERM, and
	# they die with it (parent-death signal) if it is killed.
	if [[ -n $BENCH_PID ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
		kill -TERM "$BENCH_PID" 2>/dev/null || true
		wait "$BENCH_PID" 2>/dev/null || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v go >/dev/null || die "go not found (looked in /usr/local/go/bin and PATH)"
[[ -x $HAPROXY ]] || die "haproxy not found at $HAPROXY (apt-get install haproxy, or set HAPROXY)"

log "building pgfront and bench/failover"
(cd "$REPO" && go build -o "$TMP/pgfront" ./cmd/pgfront && go build -o "$TMP/failover" ./bench/failover) >&2 ||
	die "build failed"

args=(-pgfront "$TMP/pgfront" -haproxy "$HAPROXY" -port-base "$BENCH_PORT_BASE")
[[ $BENCH_KEEP == 1 ]] && args+=(-keep)
[[ $BENCH_DCS == 1 ]] && args+=(-dcs)

for ((run = 1; run <= BENCH_RUNS; run++)); do
	if ((BENCH_RUNS > 1)); then
		log "run $run of $BENCH_RUNS"
		printf '\n######## run %d of %d\n\n' "$run" "$BENCH_RUNS"
	fi
	# In the background and waited for, so the traps run while it works.
	"$TMP/failover" "${args[@]}" >"$TMP/run$run.out" &
	BENCH_PID=$!
	status=0
	wait "$BENCH_PID" || status=$?
	BENCH_PID=""
	cat "$TMP/run$run.out"
	((status == 0)) || die "bench/failover exited with status $status"
done

# The spread: every run's table rows and target lines side by side.
if ((BENCH_RUNS > 1)); then
	printf '\n######## all %d runs\n\n' "$BENCH_RUNS"
	grep -m1 '^ *scenario  ' "$TMP/run1.out" | sed 's/^/     /'
	for ((run = 1; run <= BENCH_RUNS; run++)); do
		grep -E '^ *(switchover|node loss) +(pgfront|haproxy) +[>=0-9]' "$TMP/run$run.out" | sed "s/^/run $run/"
	done
	echo
	for ((run = 1; run <= BENCH_RUNS; run++)); do
		grep -E 'window pgfront/HAProxy|MISSED' "$TMP/run$run.out" | sed "s/^/run $run/"
	done
fi
