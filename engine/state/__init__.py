"""The engine's shared state in Postgres: cap counters and duplicate fingerprints.

The SQL adapter (``store``) keys every write by lead id so that crashes, retries,
rebalances and replays never count a lead twice; what is counted and why a full
counter refuses a lead are pure decisions in ``engine.steps`` (``cap_checks``,
``cap_windows``, ``duplicates``).
"""
