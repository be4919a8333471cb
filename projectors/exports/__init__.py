"""Exports of the event projection: streamed as CSV or JSON lines, or run as jobs that
write the file to object storage (``leadflow export``, ``GET …/export``, ``POST /exports``)."""
