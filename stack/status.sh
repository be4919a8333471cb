#!/usr/bin/env bash
# Print each service of the local stack as up / down (with its health check).
# Exit status 0 only if every listed service is up.
#
#   stack/status.sh                  kafka postgres s3 azure registry (+ kafka3 if any node of it runs)
#   stack/status.sh kafka3           the 3-node Kafka cluster, node by node
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh"

usage() { print_usage "${BASH_SOURCE[0]}"; }

explicit=$#
parse_services kafka postgres s3 azure registry -- "$@"
if ((explicit == 0)); then
  for n in 1 2 3; do
    if kafka_node_alive cluster "$n"; then SERVICES+=(kafka3); break; fi
  done
fi

rc=0
for s in "${SERVICES[@]}"; do
  case $s in
    kafka) status_kafka || rc=1 ;;
    kafka3) status_kafka3 || rc=1 ;;
    postgres) status_postgres || rc=1 ;;
    s3) status_s3 || rc=1 ;;
    azure) status_azure || rc=1 ;;
    registry) status_registry || rc=1 ;;
  esac
done
exit $rc
