# shellcheck shell=bash
# Debian's Chromium for the operator UI's browser tests (tests/engine/ui): Playwright
# drives /usr/bin/chromium through executable_path, so no browser is ever downloaded
# by a test tool (which this closed network refuses anyway). The tests' accessibility
# audit runs axe-core, pinned in stack/axe/package-lock.json and installed with `npm ci`
# into .stack/tools/axe (state stays out of the work tree).

CHROMIUM_BIN=${LEADFLOW_CHROMIUM:-/usr/bin/chromium}
AXE_SRC="$STACK_SRC/axe"
AXE_DIR="$TOOLS_DIR/axe"

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

# axe-core from the committed lock file; redone only when stack/axe/ changes.
ensure_axe() {
  ensure_dirs
  local stamp
  stamp=$(files_hash "$AXE_SRC/package.json" "$AXE_SRC/package-lock.json")
  if stamp_ok "$AXE_DIR/.stamp" "$stamp" && [[ -f $AXE_DIR/node_modules/axe-core/axe.min.js ]]; then
    ok "axe-core: $(cd "$AXE_DIR" && node -p 'require("axe-core/package.json").version')"
    return 0
  fi
  command -v npm >/dev/null || die "npm not found: install Node 20 (it also runs Azurite)"
  log "axe-core: npm ci (stack/axe/package-lock.json)"
  mkdir -p "$AXE_DIR"
  cp "$AXE_SRC/package.json" "$AXE_SRC/package-lock.json" "$AXE_DIR/"
  (cd "$AXE_DIR" && npm ci --no-audit --no-fund --ignore-scripts) >"$LOG_DIR/axe-npm.log" 2>&1 ||
    fail_with_log "npm ci for axe-core failed" "$LOG_DIR/axe-npm.log"
  echo "$stamp" >"$AXE_DIR/.stamp"
  ok "axe-core: $(cd "$AXE_DIR" && node -p 'require("axe-core/package.json").version')"
}
