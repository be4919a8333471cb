"""The Kafka kit: the one place that talks to librdkafka; every worker builds on it.

One module per chore, each saying which Kafka subtlety it handles:
``config`` (client configurations, TLS and SASL included; which errors are
fatal), ``clients`` (building them), ``fetch`` (a batch that wakes at the first
record; triage of consume errors), ``transaction`` (a transactional producer
that meters its commits and aborts), ``compacted`` (reading a topic to its
end), ``topics`` (creating topics and waiting for their leaders), ``offsets``
(ListOffsets, committed offsets, lag that ignores transaction markers),
``dead_letter`` (a record set aside, with where it came from and why),
``metrics`` (every worker's Prometheus metrics), ``probe`` (is Kafka there at all).
"""
