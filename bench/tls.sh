#!/usr/bin/env bash
# pgfront TLS benchmark: pgbench over TLS (sslmode=require) to the same PostgreSQL 15, four
# ways, all on loopback:
#   direct               pgbench -> PostgreSQL (ssl = on)
#   pgfront-terminate    pgbench -> pgfront (terminates TLS) -> PostgreSQL, plain TCP
#   pgfront-passthrough  pgbench -> pgfront (passthrough, blind) -> PostgreSQL, TLS end to end
#   pgbouncer            pgbench -> PgBouncer 1.18 (client_tls_sslmode = require,
#                        pool_mode = session) -> PostgreSQL, plain TCP, pooled server logins
#
#   bash bench/tls.sh                                  # full run: 3 rounds x 10 s per cell, ~7 min
#   BENCH_SECONDS=3 BENCH_ROUNDS=1 bash bench/tls.sh   # quick run, ~1 min
#
# It builds pgfront and bench/tlscerts, writes a throw-away CA and one server certificate
# for 127.0.0.1/localhost that PostgreSQL, pgfront and PgBouncer all present, installs
# Debian's pgbouncer if absent, starts its own PostgreSQL (initdb in a temp dir), pgfront
# (one process, a terminate and a passthrough route) and PgBouncer, and measures in
# interleaved rounds (every target once per measurement per round, order rotated):
#   1. pgbench -S (select-only) TPS and proxy CPU per 1,000 transactions at 1 and 16 clients;
#   2. pgbench -S -C (a new connection, so one TLS handshake, per transaction) at 8 clients:
#      handshakes per second and proxy CPU per 1,000 handshakes.
# Proxy CPU is utime+stime of the proxy process (all threads) from /proc/PID/stat. The
# markdown tables (medians over rounds) go to stdout, progress to stderr. Everything it
# started is stopped and its temp dir removed on exit, error or Ctrl-C. See bench/README.md.
#
# Settings (environment):
#   BENCH_SECONDS=10        length of each pgbench run
#   BENCH_ROUNDS=3          rounds; each round runs every target once per measurement
#   BENCH_CLIENTS="1 16"    client counts for the select-only runs
#   BENCH_CHURN_CLIENTS=8   clients for the -C (handshake churn) runs
#   BENCH_SCALE=10          pgbench scale factor
#   BENCH_WARMUP=3          seconds of unmeasured select-only load per target before round 1
#   BENCH_PORT_BASE=27432   first of four consecutive loopback ports (PostgreSQL, pgfront
#                           terminate, pgfront passthrough, PgBouncer); clear of pgbench.sh's
#                           25432.. and failover.sh's 26432..
#   PGBIN=/usr/lib/postgresql/15/bin
set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-"1 16"}
BENCH_CHURN_CLIENTS=${BENCH_CHURN_CLIENTS:-8}
BENCH_SCALE=${BENCH_SCALE:-10}
BENCH_WARMUP=${BENCH_WARMUP:-3}
BENCH_PORT_BASE=${BENCH_PORT_BASE:-27432}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HOST=127.0.0.1

PORT_PG=$BENCH_PORT_BASE
PORT_TERMINATE=$((BENCH_PORT_BASE + 1))
PORT_PASSTHROUGH=$((BENCH_PORT_BASE + 2))
PORT_PGBOUNCER=$((BENCH_PORT_BASE + 3))

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

BENCH_TAG=tls-bench
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------- cleanup

TMP=""
PIDS=()          # background processes we started (pgfront); stopped on exit
PGBENCH_PID=""   # the pgbench running now, if any
PGB_PIDFILE=""   # pidfile of our PgBouncer daemon
PG_STARTED=0

cleanup() {
	local rc=$? pid
	trap - EXIT
	trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
	set +e
	[ -n "$PGBENCH_PID" ] && stop_pid "$PGBENCH_PID"
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	[ -n "$PGB_PIDFILE" ] && [ -s "$PGB_PIDFILE" ] && stop_pid "$(cat "$PGB_PIDFILE")"
	stop_pg
	[ -n "$TMP" ] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# ---------------------------------------------------------------- setup

find_pg_tools

if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
	install_pkg pgbouncer
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

for p in "$PORT_PG" "$PORT_TERMINATE" "$PORT_PASSTHROUGH" "$PORT_PGBOUNCER"; do
	port_free "$p" || die "port $HOST:$p is in use; set BENCH_PORT_BASE"
done

TMP=$(mktemp -d /tmp/pgfront-tlsbench.XXXXXX)
chmod 755 "$TMP"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# The repository is edited by others while this runs: a failed build is retried every
# 30 s for up to 10 minutes before giving up.
log "building pgfront and tlscerts"
for ((attempt = 1; ; attempt++)); do
	(cd "$REPO" && go build -o "$TMP/pgfront" ./cmd/pgfront && go build -o "$TMP/tlscerts" ./bench/tlscerts) >"$TMP/build.log" 2>&1 && break
	((attempt < 21)) || { cat "$TMP/build.log" >&2; die "build failed"; }
	log "build failed (attempt $attempt), retrying in 30 s: $(head -1 "$TMP/build.log")"
	sleep 30
done

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# One CA and one server certificate (ECDSA P-256) for every TLS endpoint, so all targets do
# the same handshake work. PostgreSQL insists on a key file owned by its user, mode 0600.
CERTS=$TMP/certs
mkdir -p "$CERTS"
"$TMP/tlscerts" -dir "$CERTS" >/dev/null || die "writing certificates failed"
[ "$(id -u)" = 0 ] && chown -R postgres: "$CERTS"

# Every libpq client below: TLS required, the chain checked against our CA (libpq's
# require checks it whenever a root file is given, the same for every target), no client
# certificate, no GSSAPI attempt; the user's ~/.postgresql files play no part.
export PGSSLMODE=require PGSSLROOTCERT=$CERTS/ca.crt PGSSLCERT=$TMP/no-client.crt PGSSLKEY=$TMP/no-client.key
export PGGSSENCMODE=disable

# ---------------------------------------------------------------- PostgreSQL

log "starting PostgreSQL on $HOST:$PORT_PG with ssl = on (initdb in $TMP/pg)"
start_pg "pgfront TLS bench" "shared_buffers = 256MB" "ssl = on" "ssl_cert_file = '$CERTS/server.crt'" "ssl_key_file = '$CERTS/server.key'"

log "pgbench -i -s $BENCH_SCALE"
"$PGBENCH" -i -q -s "$BENCH_SCALE" -h "$HOST" -p "$PORT_PG" -U "$PGUSER_NAME" postgres >"$TMP/init.log" 2>&1 ||
	{ cat "$TMP/init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------- proxies

# pgfront: one process with both routes (targets run one at a time, and its CPU is read
# per run). Log level warn: at info it writes one line per session end, thousands a
# second under -C. No health checks in the way; default timeouts. The terminate route
# refuses plain-text clients (require), as PgBouncer's client_tls_sslmode = require does.
cat >"$TMP/pgfront.yaml" <<EOF
log: {level: warn}
admin: {listen: "$HOST:0"} # metrics and socket sampling on, as in production; any free port
clusters:
  bench:
    health: {check: none}
    servers:
      - name: pg
        address: $HOST:$PORT_PG
        role: primary
routes:
  terminate:
    listen: $HOST:$PORT_TERMINATE
    cluster: bench
    role: primary
    tls: {mode: terminate, cert_file: $CERTS/server.crt, key_file: $CERTS/server.key, require: true}
  passthrough:
    listen: $HOST:$PORT_PASSTHROUGH
    cluster: bench
    role: primary
    tls: {mode: passthrough}
EOF
"$TMP/pgfront" check -c "$TMP/pgfront.yaml" >"$TMP/pgfront-check.log" 2>&1 ||
	{ cat "$TMP/pgfront-check.log" >&2; die "pgfront check failed"; }
"$TMP/pgfront" run -c "$TMP/pgfront.yaml" >>"$TMP/pgfront.log" 2>&1 &
PGFRONT_PID=$!
PIDS+=("$PGFRONT_PID")
wait_listen "$PORT_TERMINATE" "$PGFRONT_PID" pgfront
wait_listen "$PORT_PASSTHROUGH" "$PGFRONT_PID" pgfront

# PgBouncer as its own daemon (-d, pidfile), never the system service. Session pooling,
# trust (the user must still be in auth_file), TLS required from clients with the same
# certificate, plain TCP to PostgreSQL. Pools large enough that no client ever waits.
# No connection logging (pgfront logs none either at warn).
mkdir -p "$TMP/pgbouncer"
printf '"%s" ""\n' "$PGUSER_NAME" >"$TMP/pgbouncer/userlist.txt"
PGB_PIDFILE=$TMP/pgbouncer/pgbouncer.pid
cat >"$TMP/pgbouncer/pgbouncer.ini" <<EOF
[databases]
postgres = host=$HOST port=$PORT_PG dbname=postgres

[pgbouncer]
listen_addr = $HOST
listen_port = $PORT_PGBOUNCER
unix_socket_dir =
pidfile = $PGB_PIDFILE
logfile = $TMP/pgbouncer/pgbouncer.log
auth_type = trust
auth_file = $TMP/pgbouncer/userlist.txt
pool_mode = session
max_client_conn = 1000
default_pool_size = 100
max_db_connections = 0
log_connections = 0
log_disconnections = 0
client_tls_sslmode = require
client_tls_cert_file = $CERTS/server.crt
client_tls_key_file = $CERTS/server.key
server_tls_sslmode = disable
EOF
[ "$(id -u)" = 0 ] && chown -R postgres: "$TMP/pgbouncer"
as_pg "$PGBOUNCER" -d -q "$TMP/pgbouncer/pgbouncer.ini" >>"$TMP/pgbouncer-start.log" 2>&1 ||
	{ cat "$TMP/pgbouncer-start.log" "$TMP/pgbouncer/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer did not start"; }
for ((i = 0; i < 100; i++)); do
	[ -s "$PGB_PIDFILE" ] && break
	sleep 0.05
done
[ -s "$PGB_PIDFILE" ] || die "pgbouncer wrote no pidfile"
PGBOUNCER_PID=$(cat "$PGB_PIDFILE")
wait_listen "$PORT_PGBOUNCER" "$PGBOUNCER_PID" pgbouncer
log "pgfront pid $PGFRONT_PID on :$PORT_TERMINATE (terminate) and :$PORT_PASSTHROUGH (passthrough), pgbouncer pid $PGBOUNCER_PID on :$PORT_PGBOUNCER"

# ---------------------------------------------------------------- targets and checks

TARGETS=(direct pgfront-terminate pgfront-passthrough pgbouncer)
target_port() {
	case $1 in
	direct) echo "$PORT_PG" ;;
	pgfront-terminate) echo "$PORT_TERMINATE" ;;
	pgfront-passthrough) echo "$PORT_PASSTHROUGH" ;;
	pgbouncer) echo "$PORT_PGBOUNCER" ;;
	esac
}
target_pid() {
	case $1 in
	direct) echo "" ;;
	pgfront-*) echo "$PGFRONT_PID" ;;
	pgbouncer) echo "$PGBOUNCER_PID" ;;
	esac
}
# Whether PostgreSQL should see its own session encrypted: only when TLS ends at PostgreSQL.
want_server_ssl() { case $1 in direct | pgfront-passthrough) echo t ;; *) echo f ;; esac; }

# Each target must take a TLS client (PGSSLMODE=require fails otherwise), refuse a
# plain-text one, and encrypt PostgreSQL's side exactly when TLS ends there.
HANDSHAKES=$TMP/handshakes.txt
: >"$HANDSHAKES"
for t in "${TARGETS[@]}"; do
	port=$(target_port "$t")
	got=$("$PSQL" -X -At -h "$HOST" -p "$port" -U "$PGUSER_NAME" -d postgres \
		-c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>&1) ||
		die "psql with sslmode=require through $t failed: $got"
	[ "$got" = "$(want_server_ssl "$t")" ] ||
		die "$t: PostgreSQL's side of the session has ssl=$got, want $(want_server_ssl "$t")"
	if PGSSLMODE=disable "$PSQL" -X -At -h "$HOST" -p "$port" -U "$PGUSER_NAME" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
		[ "$t" = direct ] || [ "$t" = pgfront-passthrough ] || die "$t accepted a plain-text client"
	fi
	# What the handshake negotiates, as OpenSSL (the library libpq uses) sees it.
	if command -v openssl >/dev/null; then
		hs=$(openssl s_client -connect "$HOST:$port" -starttls postgres -brief </dev/null 2>&1 |
			awk -F': ' '/^Protocol version/{v=$2} /^Ciphersuite/{c=$2} /^(Server Temp Key|Negotiated TLS1.3 group)/{k=$2} END{print v ", " c ", key exchange " k}')
		printf '%s\t%s\n' "$t" "$hs" >>"$HANDSHAKES"
	fi
done
log "TLS checks passed: every target takes sslmode=require; plain text refused by pgfront-terminate and pgbouncer"

# ---------------------------------------------------------------- pgbench runs

RESULTS=$TMP/results.tsv # mode target clients round tps transactions cpu_ticks
: >"$RESULTS"

# run_pgbench mode target clients seconds [round]: one pgbench run; with a round, records it.
run_pgbench() {
	local mode=$1 target=$2 clients=$3 secs=$4 round=${5:-} port pid jobs c0=0 c1=0 out
	local -a extra=()
	port=$(target_port "$target")
	pid=$(target_pid "$target")
	jobs=$((clients < 2 ? clients : 2))
	[ "$mode" = churn ] && extra=(-C)
	local rc tps tx attempt
	for ((attempt = 1; ; attempt++)); do
		if [ -n "$pid" ]; then c0=$(cpu_ticks "$pid") || die "$target: its process $pid has exited"; fi
		# pgbench runs in the background and the script waits for it: a trapped signal
		# (Ctrl-C) interrupts wait at once, while a foreground pgbench, which survives
		# SIGINT, would keep the trap from running until it finished.
		rc=0
		"$PGBENCH" -n -S "${extra[@]}" -c "$clients" -j "$jobs" -T "$secs" \
			-h "$HOST" -p "$port" -U "$PGUSER_NAME" postgres >"$TMP/pgbench.out" 2>&1 &
		PGBENCH_PID=$!
		wait "$PGBENCH_PID" || rc=$?
		PGBENCH_PID=""
		out=$(<"$TMP/pgbench.out")
		if ((rc >= 128)); then
			log "pgbench killed by signal $((rc - 128))"
			exit "$rc"
		elif ((rc != 0)); then
			printf '%s\n' "$out" >&2
			die "pgbench failed: $mode $target $clients clients"
		fi
		if [ -n "$pid" ]; then c1=$(cpu_ticks "$pid") || die "$target: its process $pid has exited"; fi
		[ -z "$round" ] && return 0
		tps=$(awk '/^tps = /{print $3; exit}' <<<"$out")
		tx=$(awk '/^number of transactions actually processed:/{print $6; exit}' <<<"$out")
		# On a busy machine the clients' TLS logins can outlast a short -T: pgbench then
		# completes no transaction and prints no tps. Run it again, once.
		if [ "$tx" = 0 ] && ((attempt < 2)); then
			log "round $round $mode $target c=$clients: no transaction completed in ${secs}s, running it again"
			continue
		fi
		break
	done
	if [ -z "$tps" ] || [ -z "$tx" ] || [ "$tx" = 0 ]; then
		printf '%s\n' "$out" >&2
		die "no pgbench result: $mode $target $clients clients (no transaction completed, or output not understood)"
	fi
	local ticks=-1 # -1: no proxy (direct)
	[ -n "$pid" ] && ticks=$((c1 - c0))
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$target" "$clients" "$round" "$tps" "$tx" "$ticks" >>"$RESULTS"
	log "round $round $mode $target c=$clients: tps $tps, $tx tx, proxy cpu $ticks ticks (load $(cut -d' ' -f1 /proc/loadavg))"
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

# The pool PgBouncer built, for the report: server logins it holds (idle, reused).
PGB_SERVER_CONNS=$("$PSQL" -X -At -h "$HOST" -p "$PORT_PG" -U "$PGUSER_NAME" -d postgres \
	-c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" 2>/dev/null || echo "?")

stop_pid "$PGFRONT_PID"
stop_pid "$PGBOUNCER_PID"

# ---------------------------------------------------------------- report

CLK_TCK=$(getconf CLK_TCK)

echo
echo "## pgfront TLS benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r);" \
	"load average (1/5/15 min) at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $PG_VERSION (ssl = on); $("$PGBOUNCER" --version | awk 'NR == 1 {v = $0} /^tls:/ {t = $0} END {print v " (" t ")"}'), pool_mode = session;" \
	"pgfront ($(go version | awk '{print $3}'), GOMAXPROCS default = $(nproc))"
echo "- pgbench -S scale $BENCH_SCALE, simple protocol, sslmode=require, over TCP on $HOST; $BENCH_ROUNDS round(s) x ${BENCH_SECONDS}s per cell, targets interleaved"
echo "- one ECDSA P-256 server certificate for every target; handshakes as OpenSSL's s_client negotiates them:"
while IFS=$'\t' read -r t hs; do echo "  - $t: $hs"; done <"$HANDSHAKES"
echo "- TPS: median over rounds (min–max in brackets). CPU: proxy utime+stime (all threads, /proc/PID/stat, ${CLK_TCK} ticks/s)" \
	"per 1,000 transactions, median over rounds; direct has no proxy."
echo "- PgBouncer pools server connections (it held $PGB_SERVER_CONNS PostgreSQL logins at the end): under -C it reuses them," \
	"so each handshake costs it a client login and a DISCARD ALL, not a new backend. pgfront is not a pooler: through it" \
	"every client connection is a new PostgreSQL backend (TPS there is bounded by PostgreSQL's fork, as direct)."

awk -F'\t' -v tck="$CLK_TCK" -v clients="$BENCH_CLIENTS" -v churn="$BENCH_CHURN_CLIENTS" '
function cell(m, t, c) { return m SUBSEP t SUBSEP c }
function add(k, v) { vals[k] = (k in vals) ? vals[k] " " v : v }
# median, lo and hi of the space-separated numbers in s (insertion sort; mawk has no asort)
function stats(s,    a, n, i, j, x) {
	n = split(s, a, " ")
	for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
	LO = a[1] + 0; HI = a[n] + 0
	MED = (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
	return n
}
{
	add(cell($1, $2, $3) SUBSEP "tps", $5)
	if ($7 >= 0 && $6 > 0) add(cell($1, $2, $3) SUBSEP "cpu", ($7 / tck * 1000) / $6 * 1000)
}
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
function table(title, label, m, c, unit, one,    i, t, k, tps, tpsr, cpu, cpur) {
	print ""
	print "### " title
	print ""
	print "| target | TPS | TPS / direct | TPS / pgbouncer | proxy CPU ms / 1k " unit " | CPU / pgbouncer |"
	print "|---|--:|--:|--:|--:|--:|"
	for (i = 1; i <= nt; i++) {
		t = T[i]; k = cell(m, t, c)
		tps[t] = ""; cpu[t] = ""
		if ((k SUBSEP "tps") in vals) { stats(vals[k SUBSEP "tps"]); tps[t] = MED; tpsr[t] = sprintf("%.0f (%.0f–%.0f)", MED, LO, HI) } else tpsr[t] = "-"
		if ((k SUBSEP "cpu") in vals) { stats(vals[k SUBSEP "cpu"]); cpu[t] = MED; cpur[t] = sprintf("%.1f (%.1f–%.1f)", MED, LO, HI) } else cpur[t] = "-"
	}
	for (i = 1; i <= nt; i++) {
		t = T[i]
		printf "| %s | %s | %s | %s | %s | %s |\n", t, tpsr[t], ratio(tps[t], tps["direct"]), ratio(tps[t], tps["pgbouncer"]), \
			cpur[t], ratio(cpu[t], cpu["pgbouncer"])
	}
	print ""
	printf "pgfront-terminate / pgbouncer: TPS %s, CPU per 1k %s; pgfront-terminate / direct: TPS %s. ", \
		ratio(tps["pgfront-terminate"], tps["pgbouncer"]), ratio(cpu["pgfront-terminate"], cpu["pgbouncer"]), \
		ratio(tps["pgfront-terminate"], tps["direct"])
	if (cpu["pgfront-terminate"] == "" || cpu["pgbouncer"] == "") { verdict = "no data"; missing++ }
	else if (cpu["pgfront-terminate"] <= cpu["pgbouncer"]) verdict = "**met**"
	else { verdict = "**not met**"; failed = failed (failed == "" ? "" : ", ") label }
	print "Target (pgfront-terminate proxy CPU per " one " <= pgbouncer'"'"'s): " verdict "."
	measured++
}
END {
	nt = split("direct pgfront-terminate pgfront-passthrough pgbouncer", T, " ")
	nc = split(clients, cs, " ")
	for (i = 1; i <= nc; i++)
		table("Select-only, " cs[i] " client" (cs[i] == 1 ? "" : "s") " (pgbench -S)", "select-only " cs[i], "select", cs[i], "tx", "transaction")
	table("Handshake churn, " churn " clients (pgbench -S -C: a new connection and TLS handshake per transaction; TPS = handshakes/s)", \
		"churn " churn, "churn", churn, "handshakes", "handshake")
	print ""
	if (missing) print "**Target: undecided** (a measurement is missing)."
	else if (failed == "") print "**Target \"TLS-terminating pgfront costs no more CPU per transaction than PgBouncer terminating TLS, measured in the same run\": met** in all " measured " measurements."
	else print "**Target \"TLS-terminating pgfront costs no more CPU per transaction than PgBouncer terminating TLS, measured in the same run\": not met** in: " failed "."
}' "$RESULTS"
