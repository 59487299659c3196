#!/usr/bin/env bash
# Databases for one test run: a database of its own on the machine's PostgreSQL and MariaDB,
# and a throwaway PostgreSQL cluster with `wal_level = logical` for replication tests.
#
# Sourced (`. scripts/databases.sh`), it defines:
#   db_reap_stale            stop logical clusters and drop databases left by runs that were killed
#                            (their owner pid is gone); prints one line per thing it removed
#   db_create NAME           create database NAME on PostgreSQL 127.0.0.1:5432 (user postgres) and
#                            on MariaDB 127.0.0.1:3306 (root), log in to each to prove it, and export
#                            SLUICE_TEST_PG_URL and SLUICE_TEST_MYSQL_URL
#   db_drop                  drop what db_create created; safe to call twice
#   pg_logical_start DIR LOG initdb a cluster into DIR (as the postgres OS user when run as root),
#                            listening on 127.0.0.1 only, on a free port, with its socket in DIR and
#                            trust auth; LOG is the server log. Exports SLUICE_TEST_PG_LOGICAL_URL
#                            and sets PG_LOGICAL_PORT, PG_LOGICAL_PID
#   pg_logical_stop          stop it (immediate), kill whatever of it is left, delete DIR, and fail
#                            if a process of it still runs; safe to call twice
# Each returns non-zero with the reason on stderr. Run directly (`scripts/databases.sh`), it
# sets all of them up, prints the environment for `cargo nextest run`, and removes them on Ctrl-C.
#
# A shell function whose output is redirected runs in a subshell here, `(f ...) >log`: with
# `f ... >log`, bash keeps its own stdout on the log while f runs, and a trap that exits on
# Ctrl-C meanwhile would print the whole clean-up into that log.
#
# Names: run databases are `sluice_test_<pid>_<hex>`, where pid is the owning script's; a
# logical cluster's DIR holds `owner.pid`. That is how db_reap_stale tells a killed run's
# leftovers from a live run's.

# shellcheck source=scripts/proc.sh
. "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

DB_PG_HOST=127.0.0.1 DB_PG_PORT=5432 DB_PG_USER=postgres
DB_MYSQL_HOST=127.0.0.1 DB_MYSQL_PORT=3306 DB_MYSQL_USER=root
DB_NAME_RE='^sluice_test_[0-9]+_[0-9a-f]+$'

# psql against the machine's server, never prompting, failing on the first error.
_db_psql() {
    PGCONNECT_TIMEOUT=5 timeout 20 psql -X -w -q -v ON_ERROR_STOP=1 \
        -h "$DB_PG_HOST" -p "$DB_PG_PORT" -U "$DB_PG_USER" "$@"
}

# The MariaDB (or MySQL) client over TCP, ignoring option files.
_db_mysql() {
    local client
    client="$(command -v mariadb || command -v mysql)" || {
        echo "databases.sh: no MariaDB client (mariadb or mysql) on PATH" >&2
        return 1
    }
    timeout 20 "$client" --no-defaults --protocol=tcp --host="$DB_MYSQL_HOST" \
        --port="$DB_MYSQL_PORT" --user="$DB_MYSQL_USER" --connect-timeout=5 --batch --skip-column-names "$@"
}

# A run's database name, for this shell's pid.
db_run_name() {
    printf 'sluice_test_%s_%s\n' "$$" "$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
}

db_create() {
    local name="${1:?db_create NAME}" out
    [[ "$name" =~ $DB_NAME_RE ]] || {
        echo "databases.sh: database name '$name' does not match $DB_NAME_RE" >&2
        return 1
    }
    # Marked before the attempt: an interrupt may land after the server made it (db_drop
    # uses IF EXISTS).
    DB_PG_CREATED="$name"
    if ! out="$(_db_psql -d postgres -c "CREATE DATABASE $name" 2>&1)"; then
        echo "databases.sh: cannot create database $name on PostgreSQL $DB_PG_HOST:$DB_PG_PORT as $DB_PG_USER: $out" >&2
        return 1
    fi
    out="$(_db_psql -d "$name" -At -c "SELECT current_user || '@' || current_database()" 2>&1)"
    if [ "$out" != "$DB_PG_USER@$name" ]; then
        echo "databases.sh: login to PostgreSQL database $name as $DB_PG_USER over $DB_PG_HOST failed: $out" >&2
        return 1
    fi
    export SLUICE_TEST_PG_URL="postgres://$DB_PG_USER@$DB_PG_HOST:$DB_PG_PORT/$name"

    DB_MYSQL_CREATED="$name"
    if ! out="$(_db_mysql -e "CREATE DATABASE \`$name\` CHARACTER SET utf8mb4" 2>&1)"; then
        echo "databases.sh: cannot create database $name on MariaDB $DB_MYSQL_HOST:$DB_MYSQL_PORT as $DB_MYSQL_USER: $out" >&2
        return 1
    fi
    out="$(_db_mysql --database="$name" -e 'SELECT DATABASE()' 2>&1)"
    if [ "$out" != "$name" ]; then
        echo "databases.sh: login to MariaDB database $name as $DB_MYSQL_USER over $DB_MYSQL_HOST failed: $out" >&2
        return 1
    fi
    export SLUICE_TEST_MYSQL_URL="mysql://$DB_MYSQL_USER@$DB_MYSQL_HOST:$DB_MYSQL_PORT/$name"
}

db_drop() {
    local rc=0
    if [ -n "${DB_PG_CREATED:-}" ]; then
        # FORCE: a test that leaked a connection must not keep the database alive.
        (_db_psql -d postgres -c "DROP DATABASE IF EXISTS $DB_PG_CREATED WITH (FORCE)") >/dev/null 2>&1 || {
            echo "databases.sh: could not drop PostgreSQL database $DB_PG_CREATED" >&2
            rc=1
        }
        DB_PG_CREATED=""
    fi
    if [ -n "${DB_MYSQL_CREATED:-}" ]; then
        (_db_mysql -e "DROP DATABASE IF EXISTS \`$DB_MYSQL_CREATED\`") >/dev/null 2>&1 || {
            echo "databases.sh: could not drop MariaDB database $DB_MYSQL_CREATED" >&2
            rc=1
        }
        DB_MYSQL_CREATED=""
    fi
    return "$rc"
}

# --- the logical-replication cluster ---------------------------------------------------------

# The bin directory of the newest installed PostgreSQL server (initdb, pg_ctl).
_pg_bin_dir() {
    local d
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 3 -name initdb -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1)"
    if [ -n "$d" ]; then
        dirname "$d"
    elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    else
        echo "databases.sh: no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql" >&2
        return 1
    fi
}

# Runs a command as the cluster's owner: the postgres OS user when we are root (initdb and
# postgres refuse to run as root), else ourselves.
_pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Pids of the postgres processes of data directory $1: the postmaster (its command line names
# the directory) and its children.
_pg_pids_of() {
    local p
    for p in $(pgrep -f -- "-D $1( |$)"); do
        echo "$p"
        pgrep -P "$p" || true
    done
}


pg_logical_start() {
    local dir="${1:?pg_logical_start DIR LOG}" log="${2:?pg_logical_start DIR LOG}" bin port attempt seen
    bin="$(_pg_bin_dir)" || return 1
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "databases.sh: running as root but there is no 'postgres' OS user to own the cluster (initdb refuses root)" >&2
        return 1
    fi
    PG_LOGICAL_BIN="$bin" PG_LOGICAL_DIR="$dir"
    mkdir -p "$dir" && : >"$log" || return 1
    echo "$$" >"$dir/owner.pid"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir" "$log" && chmod 700 "$dir" || return 1
    fi
    if ! _pg_as_owner test -w "$dir" -a -w "$log"; then
        echo "databases.sh: the postgres user cannot write $dir: every parent directory must be searchable by it (chmod o+x), or set TMPDIR=/tmp" >&2
        return 1
    fi
    # The socket path is limited to 107 bytes.
    if [ "${#dir}" -gt 80 ]; then
        echo "databases.sh: $dir is too long for a unix socket path; use a shorter TMPDIR" >&2
        return 1
    fi
    if ! (_pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync) >"$dir/initdb.log" 2>&1; then
        echo "databases.sh: initdb failed:" >&2
        tail -n 20 "$dir/initdb.log" >&2
        return 1
    fi
    cat >>"$dir/data/postgresql.conf" <<EOF

# scripts/databases.sh: a throwaway cluster for logical-replication tests.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
# Nothing here outlives the run: trade durability for speed. synchronous_commit stays on:
# logical decoding only sees WAL that is flushed, so with it off a committed change would
# reach the slot up to a few hundred ms late.
fsync = off
full_page_writes = off
EOF
    # The port is picked, released, then bound by postgres: another process may take it in
    # between, so a start that failed on "address in use" is retried on a new port.
    for attempt in 1 2 3; do
        port="$(free_port)"
        seen="$(wc -l <"$log")"
        if (_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$log" -o "-p $port" -w -t 30 start) >/dev/null 2>&1; then
            PG_LOGICAL_PORT="$port"
            PG_LOGICAL_PID="$(head -n 1 "$dir/data/postmaster.pid")"
            export SLUICE_TEST_PG_LOGICAL_URL="postgres://postgres@127.0.0.1:$port/postgres"
            return 0
        fi
        if ! tail -n "+$((seen + 1))" "$log" | grep -qi 'address already in use'; then
            echo "databases.sh: the logical-replication cluster did not start; its log ($log):" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        echo "databases.sh: port $port was taken meanwhile (attempt $attempt), trying another" >&2
    done
    return 1
}

# Stops the cluster in directory $1 with pg_ctl binaries in $2, kills what is left, deletes $1.
_pg_logical_remove() {
    local dir="$1" bin="$2" pids _
    if [ -f "$dir/data/postmaster.pid" ] && [ -n "$bin" ]; then
        (_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop) >/dev/null 2>&1 || true
    fi
    # A start interrupted halfway, or a stop that failed: kill whatever still runs from it.
    pids="$(_pg_pids_of "$dir/data")"
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -z "$(_pg_pids_of "$dir/data")" ] && break
            sleep 0.1
        done
    fi
    pids="$(_pg_pids_of "$dir/data")"
    if [ -n "$pids" ]; then
        echo "databases.sh: postgres processes of $dir/data are still running: ${pids//$'\n'/ }" >&2
        return 1
    fi
    rm -rf "$dir"
}

pg_logical_stop() {
    local dir="${PG_LOGICAL_DIR:-}"
    [ -n "$dir" ] || return 0
    PG_LOGICAL_DIR=""
    [ -d "$dir" ] || return 0
    _pg_logical_remove "$dir" "${PG_LOGICAL_BIN:-}"
}

# --- leftovers of killed runs ----------------------------------------------------------------

db_reap_stale() {
    local owner name dir bin
    # Logical clusters under the usual temp directory whose owner is gone.
    bin="$(_pg_bin_dir 2>/dev/null)" || bin=""
    for dir in "${TMPDIR:-/tmp}"/sluice-test.*/pg-logical; do
        [ -f "$dir/owner.pid" ] || continue
        owner="$(cat "$dir/owner.pid" 2>/dev/null)" || owner=""
        [ -n "$owner" ] && pid_running "$owner" && continue
        _pg_logical_remove "$dir" "$bin" && echo "removed the logical cluster of a killed run: $dir"
    done
    # Run databases whose owner is gone.
    for name in $(_db_psql -d postgres -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'sluice\_test\_%'" 2>/dev/null) \
        $(_db_mysql -e "SHOW DATABASES LIKE 'sluice\\_test\\_%'" 2>/dev/null); do
        [[ "$name" =~ $DB_NAME_RE ]] || continue
        owner="${name#sluice_test_}"
        owner="${owner%%_*}"
        pid_running "$owner" && continue
        if (_db_psql -d postgres -c "DROP DATABASE IF EXISTS $name WITH (FORCE)") >/dev/null 2>&1 &&
            (_db_mysql -e "DROP DATABASE IF EXISTS \`$name\`") >/dev/null 2>&1; then
            echo "dropped database $name of a killed run"
        fi
    done | sort -u
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-test.XXXXXX")"
    chmod 711 "$work"
    sleeper=""
    # set +e first: a step that fails (the sleeper already gone with the same signal) must not
    # cut the clean-up short.
    trap 'set +e; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; pg_logical_stop; db_drop; rm -rf "$work"; echo "databases dropped, logical cluster removed"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    db_reap_stale
    db_create "$(db_run_name)"
    pg_logical_start "$work/pg-logical" "$work/pg-logical.log"
    cat <<EOF
databases ready (logical cluster: pid $PG_LOGICAL_PID, log $work/pg-logical.log)
  export SLUICE_TEST_PG_URL=$SLUICE_TEST_PG_URL
  export SLUICE_TEST_MYSQL_URL=$SLUICE_TEST_MYSQL_URL
  export SLUICE_TEST_PG_LOGICAL_URL=$SLUICE_TEST_PG_LOGICAL_URL
Ctrl-C drops them.
EOF
    sleep infinity &
    sleeper=$!
    wait "$sleeper"
fi
