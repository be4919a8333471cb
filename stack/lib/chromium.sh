# shellcheck shell=bash
# Debian's Chromium for the operator UI's browser tests (tests/engine/ui): Playwright
# drives /usr/bin/chromium through executable_path, so no browser is ever downloaded
# by a test tool (which this closed network refuses anyway).

CHROMIUM_BIN=${LEADFLOW_CHROMIUM:-/usr/bin/chromium}

chromium_ok() { [[ -x $CHROMIUM_BIN ]] && "$CHROMIUM_BIN" --version >/dev/null 2>&1; }

ensure_chromium() {
  ensure_dirs
  if chromium_ok; then
    ok "chromium: $("$CHROMIUM_BIN" --version 2>/dev/null)"
    return 0
  fi
  is_root || die "chromium not found at $CHROMIUM_BIN; install it: sudo apt-get install chromium"
  log "chromium: installing Debian package chromium (apt-get)"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core; } \
    >"$LOG_DIR/chromium-apt.log" 2>&1 || fail_with_log "apt-get install chromium failed" "$LOG_DIR/chromium-apt.log"
  chromium_ok || die "chromium installed but $CHROMIUM_BIN --version fails"
  ok "chromium: $("$CHROMIUM_BIN" --version 2>/dev/null)"
}
