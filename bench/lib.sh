# Shell helpers shared by the benchmark scripts (sourced; set BENCH_TAG and HOST first).
# Nothing here starts or stops anything until a script calls it.

log() { printf '[%s %s] %s\n' "$BENCH_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop_pid() { # pid: TERM, wait up to 10 s, then KILL
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

wait_listen() { # port pid what
	local i
	for ((i = 0; i < 200; i++)); do
		ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
		kill -0 "$2" 2>/dev/null || die "$3 exited before listening on $HOST:$1"
		sleep 0.05
	done
	die "$3 did not listen on $HOST:$1 within 10 s"
}

# CPU time (user+system, all threads) of a process in clock ticks: fields 14 and 15 of
# /proc/PID/stat, counted after the ")" that closes the command name. Fails if it is gone.
cpu_ticks() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	awk '{sub(/.*\) /, ""); print $12 + $13}' <<<"$stat"
}

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# Scheduler counts of a process, summed over its threads: "migrations voluntary involuntary"
# (CPU migrations and context switches, from /proc/PID/task/*/sched; migrations are "-" on a
# kernel without that file, the switches then come from .../status). A thread that exits
# between two readings takes its counts with it: Go's and HAProxy's threads live as long as
# the process.
sched_counts() {
	local d=/proc/$1/task
	if compgen -G "$d/*/sched" >/dev/null; then
		cat "$d"/*/sched 2>/dev/null | awk '/^se.nr_migrations/{m += $3} /^nr_voluntary_switches/{v += $3}
			/^nr_involuntary_switches/{i += $3} END {printf "%d %d %d\n", m, v, i}'
	else
		cat "$d"/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/{v += $2}
			/^nonvoluntary_ctxt_switches/{i += $2} END {printf "- %d %d\n", v, i}'
	fi
}

# As root, PostgreSQL (and PgBouncer), which refuse to run as root, run as the postgres user.
if [ "$(id -u)" = 0 ]; then
	PGUSER_NAME=postgres
	as_pg() { runuser -u postgres -- "$@"; }
else
	PGUSER_NAME=$(id -un)
	as_pg() { "$@"; }
fi

# install_pkg PKG: install a Debian package (root only). Its postinst would start the system
# service: service starts are forbidden for the install (policy-rc.d exit 101), unless a
# policy is already in place.
install_pkg() {
	local policy="" apt_rc=0
	[ "$(id -u)" = 0 ] || die "$1 is not installed and installing it needs root"
	log "installing Debian's $1 package"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
	fi
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1"; } >&2 || apt_rc=$?
	[ -n "$policy" ] && rm -f "$policy"
	[ "$apt_rc" = 0 ] || die "apt-get install $1 failed"
}

# find_pg_tools: checks for ss and PostgreSQL's server binaries in $PGBIN and sets PGBENCH and
# PSQL (from $PGBIN, else PATH).
find_pg_tools() {
	command -v ss >/dev/null || die "ss (iproute2) is needed"
	[ -x "$PGBIN/initdb" ] || die "no PostgreSQL 15 server binaries in $PGBIN"
	PGBENCH=$PGBIN/pgbench
	[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found"
	PSQL=$PGBIN/psql
	[ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found"
}

# start_pg TITLE [EXTRA_CONF_LINE...]: a throw-away PostgreSQL in $TMP/pg on $HOST:$PORT_PG
# (trust auth, no fsync), the extra lines appended to postgresql.conf; sets PG_STARTED (for
# stop_pg) and PG_VERSION.
start_pg() {
	local title=$1 line
	shift
	mkdir -p "$TMP/pg"
	[ "$(id -u)" = 0 ] && chown postgres: "$TMP/pg"
	as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -A trust -U "$PGUSER_NAME" -E UTF8 --locale=C --no-sync >"$TMP/initdb.log" 2>&1 ||
		{ cat "$TMP/initdb.log" >&2; die "initdb failed"; }
	{
		echo "# $title"
		echo "listen_addresses = '$HOST'"
		echo "port = $PORT_PG"
		echo "unix_socket_directories = '$TMP/pg'"
		echo "max_connections = 200"
		echo "fsync = off"
		echo "synchronous_commit = off"
		echo "full_page_writes = off"
		for line in "$@"; do echo "$line"; done
	} >>"$TMP/pg/data/postgresql.conf"
	PG_STARTED=1
	as_pg "$PGBIN/pg_ctl" start -D "$TMP/pg/data" -l "$TMP/pg/postgres.log" -w -t 60 >/dev/null ||
		{ cat "$TMP/pg/postgres.log" >&2; die "PostgreSQL did not start"; }
	PG_VERSION=$("$PGBIN/postgres" --version)
}

# stop_pg: stops the PostgreSQL start_pg started, if it did (for cleanup traps).
stop_pg() {
	if [ "${PG_STARTED:-0}" = 1 ]; then
		as_pg "$PGBIN/pg_ctl" stop -D "$TMP/pg/data" -m immediate -w >/dev/null 2>&1
	fi
	return 0
}
