#!/usr/bin/env bash
# End-to-end check of a running stack, as the application would use it:
# Kafka produce+consume, Postgres login with the app URL, S3 conditional put,
# Azure Blob conditional upload. Needs stack/up.sh first.
#
#   stack/smoke.sh            single-node Kafka on 127.0.0.1:9092 + the rest
#   stack/smoke.sh kafka3     only the 3-node Kafka cluster (RF 3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/services.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then print_usage "${BASH_SOURCE[0]}"; exit 0; fi
[[ -x $VPY ]] || die "tools venv missing: run stack/up.sh first"

if [[ ${1:-} == kafka3 ]]; then
  "$VPY" "$PROBE" kafka-smoke --bootstrap "$KAFKA3_BOOTSTRAP" --rf 3
  exit 0
fi

"$VPY" "$PROBE" kafka-ready --bootstrap "$HOST:$KAFKA_PORT" -v | sed 's/^/kafka: /'
"$VPY" "$PROBE" kafka-smoke --bootstrap "$HOST:$KAFKA_PORT" --rf 1

ensure_pg_bin
echo "postgres: $("$PGBIN/psql" -X -At "$PG_APP_URL" -c "select current_user || '@' || current_database() || ' on ' || split_part(version(), ' ', 2) || ', fsync=' || current_setting('fsync') || ', max_connections=' || current_setting('max_connections') || ', shared_buffers=' || current_setting('shared_buffers')")"

"$VPY" "$PROBE" s3-setup --check-conditional
"$VPY" "$PROBE" azure-setup --check-conditional
ok "smoke: all checks passed"
