# shellcheck shell=bash
# Project-local PostgreSQL cluster: .stack/postgres/data, 127.0.0.1:5433, socket
# in .stack/postgres/run. Independent of any system cluster (which uses 5432).
#
# initdb/postgres refuse to run as root: as root everything server-side runs as
# the `postgres` system user (runuser), otherwise as the current user.

# STACK_PG_PORT / STACK_PG_DIR / STACK_PG_LOG start a second, private cluster (make chaos
# restarts its own Postgres, never the shared one); unset, they are the stack's defaults.
PG_PORT=${STACK_PG_PORT:-$PG_DEFAULT_PORT}
PG_DIR=${STACK_PG_DIR:-$STACK_DIR/postgres}
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/run"
PG_LOG=${STACK_PG_LOG:-$LOG_DIR/postgres.log}
PG_START_TIMEOUT=${PG_START_TIMEOUT:-60}
PG_APP_URL="postgresql://leadflow:leadflow@$HOST:$PG_PORT/leadflow"

# Locate the server binaries (initdb, pg_ctl, postgres); install Debian's
# postgresql package if none is there.
pg_find_bindir() {
  local d
  if command -v pg_config >/dev/null && d=$(pg_config --bindir 2>/dev/null) && [[ -x $d/initdb && -x $d/pg_ctl ]]; then
    echo "$d"
    return 0
  fi
  # Debian keeps server binaries out of PATH; take the newest major version.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

ensure_pg_bin() {
  [[ -n ${PGBIN:-} ]] && return 0
  if ! PGBIN=$(pg_find_bindir); then
    is_root || die "PostgreSQL server binaries not found; install them: sudo apt-get install postgresql"
    log "postgres: installing Debian package postgresql (apt-get)"
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql postgresql-client; } \
      >"$LOG_DIR/postgres-apt.log" 2>&1 || fail_with_log "apt-get install postgresql failed" "$LOG_DIR/postgres-apt.log"
    PGBIN=$(pg_find_bindir) || die "postgresql installed but initdb/pg_ctl still not found"
  fi
}

# Run a server-side command as the cluster owner.
pg_as_owner() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Client commands (psql, pg_isready) run as whoever we are.
pg_admin_psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres; }

pg_running() { [[ -f $PG_DATA/postmaster.pid ]] && "$PGBIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; }

pg_app_ok() { PGCONNECT_TIMEOUT=3 "$PGBIN/psql" -X -q -At "$PG_APP_URL" -c 'select 1' >/dev/null 2>&1; }

pg_initdb_if_needed() {
  [[ -f $PG_DATA/PG_VERSION ]] && return 0
  log "postgres: initdb into ${PG_DATA#"$REPO_ROOT"/}"
  mkdir -p "$PG_DATA" "$PG_SOCK"
  chmod 700 "$PG_DATA"
  if is_root; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' system user (install the postgresql package)"
    chown -R postgres: "$PG_DIR"
    # The postgres user must be able to reach the data dir through the repo path.
    runuser -u postgres -- test -x "$PG_DIR" ||
      die "user postgres cannot traverse $PG_DIR; make the parent directories world-searchable (chmod o+x)"
  fi
  # Superuser 'postgres' whichever OS user runs it; socket connections are
  # trusted (the socket dir is private to this checkout), TCP needs a password.
  pg_as_owner "$PGBIN/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$LOG_DIR/postgres-initdb.log" 2>&1 ||
    fail_with_log "initdb failed" "$LOG_DIR/postgres-initdb.log"
  printf "\n# leadflow local stack (stack/postgres/postgresql.conf, copied at each start)\ninclude_if_exists = 'leadflow.conf'\n" \
    >>"$PG_DATA/postgresql.conf"
}

# Role leadflow/leadflow (LOGIN CREATEDB) and database leadflow owned by it.
pg_ensure_app_db() {
  pg_admin_psql <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'leadflow') THEN
    CREATE ROLE leadflow LOGIN CREATEDB PASSWORD 'leadflow';
  ELSE
    ALTER ROLE leadflow LOGIN CREATEDB PASSWORD 'leadflow';
  END IF;
END $$;
SELECT 'CREATE DATABASE leadflow OWNER leadflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'leadflow') \gexec
SQL
}

up_postgres() {
  ensure_dirs
  ensure_pg_bin
  if pg_running && pg_app_ok; then
    ok "postgres: already running on $HOST:$PG_PORT"
    return 0
  fi
  if ! pg_running; then
    port_open "$PG_PORT" && die "postgres: port $PG_PORT is already in use by another process $(port_owner "$PG_PORT")"
    pg_initdb_if_needed
    mkdir -p "$PG_SOCK"
    cp "$STACK_SRC/postgres/postgresql.conf" "$PG_DATA/leadflow.conf"
    touch "$PG_LOG"
    if is_root; then chown -R postgres: "$PG_DIR" && chown postgres: "$PG_LOG"; fi
    log "postgres: starting ($("$PGBIN/postgres" --version | awk '{print $3}')) on $HOST:$PG_PORT"
    # pg_ctl detaches the postmaster itself (own session); -w waits until it
    # accepts connections. Port and socket dir go on the command line so the
    # data dir holds no absolute path.
    pg_as_owner "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_START_TIMEOUT" \
      -o "-p $PG_PORT -k '$PG_SOCK'" start >>"$LOG_DIR/postgres-ctl.log" 2>&1 9>&- ||
      fail_with_log "postgres did not start within ${PG_START_TIMEOUT}s" "$LOG_DIR/postgres-ctl.log" "$PG_LOG"
  fi
  wait_until "$PG_START_TIMEOUT" "" "" pg_running ||
    fail_with_log "postgres: pg_isready never answered on $HOST:$PG_PORT" "$PG_LOG"
  pg_ensure_app_db || fail_with_log "postgres: creating role/database leadflow failed" "$PG_LOG"
  pg_app_ok || fail_with_log "postgres: cannot connect as leadflow ($PG_APP_URL)" "$PG_LOG"
  ok "postgres: ready, $PG_APP_URL"
}

down_postgres() {
  PGBIN=${PGBIN:-$(pg_find_bindir)} || { log "postgres: not installed, nothing to stop"; return 0; }
  # pg_ctl status: 0 = running, 3 = not running (also with a stale postmaster.pid).
  if [[ -f $PG_DATA/postmaster.pid ]] && pg_as_owner "$PGBIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "postgres: stopping"
    pg_as_owner "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >>"$LOG_DIR/postgres-ctl.log" 2>&1 ||
      fail_with_log "postgres: pg_ctl stop failed" "$LOG_DIR/postgres-ctl.log" "$PG_LOG"
    ok "postgres: stopped"
  else
    log "postgres: not running"
  fi
}

status_postgres() {
  PGBIN=${PGBIN:-$(pg_find_bindir)} || { status_line postgres down "(PostgreSQL not installed)"; return 1; }
  if pg_running; then
    if pg_app_ok; then
      status_line postgres up "$PG_APP_URL (pid $(head -1 "$PG_DATA/postmaster.pid"))"
    else
      status_line postgres UNHEALTHY "server answers on $HOST:$PG_PORT but login as leadflow fails"
      return 1
    fi
  else
    status_line postgres down
    return 1
  fi
}
