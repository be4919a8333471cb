#!/usr/bin/env bash
# Start the local service stack (idempotent) and return once every requested
# service answers its health check.
#
#   stack/up.sh                      kafka postgres s3 azure registry
#   stack/up.sh kafka postgres       only these
#   stack/up.sh kafka --nodes 3      3-node Kafka cluster (same as: KAFKA_NODES=3 stack/up.sh kafka,
#                                    or stack/up.sh kafka3); runs beside the single node
#
# State, logs and pid files: .stack/ in the repo root. See stack/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh"

usage() { print_usage "${BASH_SOURCE[0]}"; }

parse_services kafka postgres s3 azure registry -- "$@"
take_lock
t0=$SECONDS

# Every health check uses the tools venv (confluent-kafka, boto3, azure-storage-blob).
ensure_tools_venv

# Kafka takes longest to boot: launch its JVM(s) first and let the other
# services start meanwhile; up_kafka/up_kafka3 below then only wait.
for s in "${SERVICES[@]}"; do
  case $s in
    kafka) ensure_kafka_libs; kafka_node_alive single 1 || kafka_spawn_node single 1 ;;
    kafka3) ensure_kafka_libs; for n in 1 2 3; do kafka_node_alive cluster "$n" || kafka_spawn_node cluster "$n"; done ;;
  esac
done

for s in "${SERVICES[@]}"; do
  case $s in
    postgres) up_postgres ;;
    s3) up_s3 ;;
    azure) up_azure ;;
    registry) up_registry ;;
  esac
done
for s in "${SERVICES[@]}"; do
  case $s in
    kafka) up_kafka ;;
    kafka3) up_kafka3 ;;
  esac
done

ok "up: ${SERVICES[*]} ready in $((SECONDS - t0))s"
