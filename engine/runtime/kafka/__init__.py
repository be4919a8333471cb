"""The Kafka kit: the one place that talks to librdkafka (clients, fetching, transactions,
topics, offsets, dead letters, metrics); every worker builds on it."""
