#!/usr/bin/env bash
# Run a Kafka tool class on the cached classpath (.stack/kafka/libs), e.g.
#
#   stack/kafka-tool.sh org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
#   stack/kafka-tool.sh org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server 127.0.0.1:9092 --describe --all-groups
#   stack/kafka-tool.sh org.apache.kafka.tools.ProducerPerformance --topic t --num-records 100000 \
#       --record-size 200 --throughput -1 --producer-props bootstrap.servers=127.0.0.1:9092
#   stack/kafka-tool.sh org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:9092 --topic t --messages 100000
#   stack/kafka-tool.sh org.apache.kafka.tools.TransactionsCommand --bootstrap-server 127.0.0.1:9092 list
#   stack/kafka-tool.sh kafka.tools.StorageTool info -c .stack/kafka/server.properties
#
# Short aliases: topics, consumer-groups, producer-perf-test, consumer-perf-test,
# transactions, metadata-quorum, storage, configs, get-offsets, console-producer,
# console-consumer.
# Tool logging: warnings to stderr (stack/kafka/tools-log4j2.yaml). Extra JVM
# flags: KAFKA_TOOL_OPTS="-Xmx1g ...".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$STACK_SRC/lib/kafka.sh"

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  print_usage "${BASH_SOURCE[0]}"
  exit 0
fi

cls=$1
shift
case $cls in
  topics) cls=org.apache.kafka.tools.TopicCommand ;;
  consumer-groups) cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  producer-perf-test) cls=org.apache.kafka.tools.ProducerPerformance ;;
  consumer-perf-test) cls=org.apache.kafka.tools.ConsumerPerformance ;;
  transactions) cls=org.apache.kafka.tools.TransactionsCommand ;;
  metadata-quorum) cls=org.apache.kafka.tools.MetadataQuorumCommand ;;
  configs) cls=org.apache.kafka.tools.ConfigCommand ;;
  get-offsets) cls=org.apache.kafka.tools.GetOffsetShell ;;
  console-producer) cls=org.apache.kafka.tools.ConsoleProducer ;;
  console-consumer) cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  storage) cls=kafka.tools.StorageTool ;;
esac

ensure_kafka_libs >&2
# shellcheck disable=SC2086 # KAFKA_TOOL_OPTS is a list of JVM flags
exec java ${KAFKA_TOOL_OPTS:-} -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$STACK_SRC/kafka/tools-log4j2.yaml" \
  -cp "$KAFKA_LIBS/*" "$cls" "$@"
