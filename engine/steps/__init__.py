"""Step decisions: pure functions of (lead snapshot, step settings, what a call returned).

Nothing here knows about Kafka, Postgres or HTTP clients; the runtime
(``engine.runtime``) does the I/O and turns drafts into events.
"""
