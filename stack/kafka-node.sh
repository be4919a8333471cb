#!/usr/bin/env bash
# Failure-test helper for ONE node of the 3-node Kafka cluster (stack/up.sh kafka --nodes 3).
#
#   stack/kafka-node.sh kill N      kill -9 node N (no shutdown at all: simulated crash)
#   stack/kafka-node.sh stop N      SIGTERM node N (controlled shutdown; kill -9 after 30 s)
#   stack/kafka-node.sh start N     start node N again and wait until it is back in the cluster
#   stack/kafka-node.sh restart N   stop + start
#   stack/kafka-node.sh status      state of nodes 1..3
#
# Node N listens on 127.0.0.1:2N092 (controller 2N093); data in .stack/kafka3/nodeN,
# broker log .stack/logs/kafka3-nodeN.log. A hard-killed broker is fenced by the
# controller after ~9 s; with one node down, acks=all writes still succeed
# (min.insync.replicas=2), with two down they fail until a node returns.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$STACK_SRC/lib/kafka.sh"

usage() { print_usage "${BASH_SOURCE[0]}"; }

action=${1:-}
n=${2:-}
if [[ $action == status ]]; then
  status_kafka3 || true
  exit 0
fi
[[ $action =~ ^(kill|stop|start|restart)$ && $n =~ ^[123]$ ]] || { usage >&2; exit 2; }

name=$(kafka_node_name cluster "$n")
[[ -f $(kafka_node_dir cluster "$n")/data/meta.properties ]] ||
  die "$name has never been started: run 'stack/up.sh kafka --nodes 3' first"

do_kill() {
  if kafka_node_alive cluster "$n"; then
    kafka_stop_node cluster "$n" 0 KILL
    ok "$name: killed (kill -9)"
  else
    log "$name: not running"
  fi
}
do_stop() {
  if kafka_node_alive cluster "$n"; then
    log "$name: stopping (SIGTERM)"
    kafka_stop_node cluster "$n" 30
    ok "$name: stopped"
  else
    log "$name: not running"
  fi
}
do_start() {
  ensure_tools_venv
  ensure_kafka_libs
  if kafka_node_alive cluster "$n" && kafka_node_healthy cluster "$n"; then
    ok "$name: already running"
    return 0
  fi
  kafka_node_alive cluster "$n" || kafka_spawn_node cluster "$n"
  kafka_wait_node cluster "$n"
  ok "$name: back in the cluster on $HOST:$(kafka_port cluster "$n")"
}

case $action in
  kill) do_kill ;;
  stop) do_stop ;;
  start) do_start ;;
  restart) do_stop; do_start ;;
esac
