#!/usr/bin/env bash
# Stop services of the local stack (idempotent; data in .stack/ is kept).
#
#   stack/down.sh                    everything, including the 3-node Kafka cluster
#   stack/down.sh kafka s3           only these
#   stack/down.sh kafka --nodes 3    the 3-node cluster (or: stack/down.sh kafka3)
#
# To wipe all state as well: stack/down.sh && rm -rf .stack
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh"

usage() { print_usage "${BASH_SOURCE[0]}"; }

# The operator UI server `leadflow demo` leaves running (engine/demo/ui_server.py): its
# process group, stopped first (it reads Postgres) and only with everything else.
down_ui() {
  local pid_file="$STACK_DIR/ui/server.pid" pid
  [[ -f $pid_file ]] || return 0
  pid=$(<"$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    ok "ui: stopped (pid $pid)"
  fi
  rm -f "$pid_file" "$STACK_DIR/ui/server.port"
}

parse_services ui kafka kafka3 postgres s3 azure registry -- "$@"
take_lock

for s in "${SERVICES[@]}"; do
  case $s in
    ui) down_ui ;;
    kafka) down_kafka ;;
    kafka3) down_kafka3 ;;
    postgres) down_postgres ;;
    s3) down_s3 ;;
    azure) down_azure ;;
    registry) down_registry ;;
  esac
done
