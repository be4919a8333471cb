"""The Postgres projection of lead events: every event once, in timeline order.

``timeline.TimelineProjector`` consumes every events topic and writes each
batch of events, the leads they touch, undecodable records and its own
per-partition checkpoint in one Postgres transaction; it resumes from that
checkpoint, never from the consumer group's offsets, so a crash at any point
neither loses nor duplicates an event. ``store`` owns the schema and the
writes, ``batch`` turns Kafka records into rows, ``queries`` reads timelines
back for the CLI and the demo.
"""
