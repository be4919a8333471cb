"""Alerts on a flow's event stream, as pure decisions: rules, windows, hysteresis, payloads.

Nothing here reads Kafka, writes Postgres or calls HTTP: ``engine.runtime.alerting`` feeds
events in and carries the decisions out (the system event outbox, webhooks, cap updates).
"""
