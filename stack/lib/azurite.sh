# shellcheck shell=bash
# Azure Blob API: Azurite (npm, pinned in stack/azurite/package-lock.json),
# blob service only, on 127.0.0.1:10000 with the well-known development account
# devstoreaccount1 (clients: AZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true).
#
# node_modules is kept out of the source tree: the committed package.json and
# package-lock.json are copied to .stack/tools/azurite and installed there with
# `npm ci` (again only when the lock file changes; ~/.npm caches the tarballs).

# STACK_AZ_PORT / STACK_AZ_DIR / STACK_AZ_LOG start a second, private instance (make chaos
# stops its own store, never the shared one); unset, they are the stack's defaults.
AZ_PORT=${STACK_AZ_PORT:-$AZ_DEFAULT_PORT}
AZ_DIR=${STACK_AZ_DIR:-$STACK_DIR/azurite}
AZ_TOOL="$TOOLS_DIR/azurite"
AZ_LOG=${STACK_AZ_LOG:-$LOG_DIR/azurite.log}
AZ_PIDFILE="$AZ_DIR/azurite.pid"
AZ_MARKER="$AZ_TOOL/node_modules"
AZ_START_TIMEOUT=${AZ_START_TIMEOUT:-60}
AZ_CONTAINER=leadflow-events

ensure_azurite() {
  local stamp="$AZ_TOOL/.stack-stamp" h
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    die "node/npm not found (Azurite 3.35 needs Node >= 18; 3.36+ needs Node >= 21)"
  fi
  h=$(files_hash "$STACK_SRC/azurite/package.json" "$STACK_SRC/azurite/package-lock.json")
  if [[ -x $AZ_TOOL/node_modules/.bin/azurite-blob ]] && stamp_ok "$stamp" "$h"; then return 0; fi
  ensure_dirs
  log "azurite: npm ci into ${AZ_TOOL#"$REPO_ROOT"/} (first run only)"
  mkdir -p "$AZ_TOOL"
  cp "$STACK_SRC/azurite/package.json" "$STACK_SRC/azurite/package-lock.json" "$AZ_TOOL/"
  (cd "$AZ_TOOL" && npm ci --omit=dev --no-audit --no-fund) >"$LOG_DIR/azurite-npm.log" 2>&1 ||
    fail_with_log "npm ci for azurite failed" "$LOG_DIR/azurite-npm.log"
  echo "$h" >"$stamp"
}

az_alive() { pid_alive "$AZ_PIDFILE" "$AZ_MARKER"; }
# Any HTTP status counts (an unauthenticated request gets 403 or 400).
az_http_ok() { port_open "$AZ_PORT" && http_answers "http://$HOST:$AZ_PORT/devstoreaccount1?comp=list"; }

up_azure() {
  ensure_dirs
  ensure_tools_venv
  ensure_azurite
  if az_alive && az_http_ok; then
    ok "azure: already running on http://$HOST:$AZ_PORT/devstoreaccount1"
    return 0
  fi
  if ! az_alive; then
    port_open "$AZ_PORT" && die "azure: port $AZ_PORT is already in use by another process $(port_owner "$AZ_PORT")"
    mkdir -p "$AZ_DIR"
    log "azure: starting Azurite $(node -p "require('$AZ_TOOL/node_modules/azurite/package.json').version") (blob) on $HOST:$AZ_PORT"
    # --skipApiVersionCheck: newer Azure SDKs send API versions this Azurite
    #   does not know yet; --loose: ignore unsupported headers instead of 400;
    # --disableTelemetry: Azurite >= 3.33 phones home by default.
    # --silent: no per-request access log (it grows without bound under tests);
    #   AZURITE_ACCESS_LOG=1 stack/up.sh azure turns it on.
    local extra=(--silent)
    [[ ${AZURITE_ACCESS_LOG:-0} == 1 ]] && extra=()
    spawn "$AZ_PIDFILE" "$AZ_LOG" \
      node "$AZ_TOOL/node_modules/.bin/azurite-blob" \
      --blobHost "$HOST" --blobPort "$AZ_PORT" --location "$AZ_DIR" \
      --skipApiVersionCheck --loose --disableTelemetry "${extra[@]}"
  fi
  local rc=0
  wait_until "$AZ_START_TIMEOUT" "$AZ_PIDFILE" "$AZ_MARKER" az_http_ok || rc=$?
  ((rc == 0)) || fail_with_log "azure: no HTTP answer on $HOST:$AZ_PORT (rc=$rc: 1 = azurite exited, 2 = timeout ${AZ_START_TIMEOUT}s)" "$AZ_LOG"
  local first=() out
  [[ -f $AZ_DIR/.conditional-write-checked ]] || first=(--check-conditional)
  out=$(STACK_AZ_BLOB_ENDPOINT="http://$HOST:$AZ_PORT/devstoreaccount1" "$VPY" "$PROBE" azure-setup "${first[@]}" 2>&1) ||
    { echo "$out" >>"$AZ_LOG"; fail_with_log "azure: creating container $AZ_CONTAINER failed: $(tail -1 <<<"$out")" "$AZ_LOG"; }
  if ((${#first[@]})); then
    sed 's/^/[stack]   /' <<<"$out"
    touch "$AZ_DIR/.conditional-write-checked"
  fi
  ok "azure: ready, http://$HOST:$AZ_PORT/devstoreaccount1 container $AZ_CONTAINER"
}

down_azure() {
  if az_alive; then
    log "azure: stopping"
    stop_pid "$AZ_PIDFILE" "$AZ_MARKER" azurite 20
    ok "azure: stopped"
  else
    rm -f "$AZ_PIDFILE"
    log "azure: not running"
  fi
}

status_azure() {
  if az_alive; then
    if az_http_ok; then
      status_line azure up "http://$HOST:$AZ_PORT/devstoreaccount1 (pid $(<"$AZ_PIDFILE"))"
    else
      status_line azure UNHEALTHY "pid $(<"$AZ_PIDFILE") runs but $HOST:$AZ_PORT does not answer"
      return 1
    fi
  else
    status_line azure down
    return 1
  fi
}
