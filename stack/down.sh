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

parse_services kafka kafka3 postgres s3 azure -- "$@"
take_lock

for s in "${SERVICES[@]}"; do
  case $s in
    kafka) down_kafka ;;
    kafka3) down_kafka3 ;;
    postgres) down_postgres ;;
    s3) down_s3 ;;
    azure) down_azure ;;
  esac
done
