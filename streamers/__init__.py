"""Event streaming: every lead event of a flow, written to S3 or Azure Blob, exactly once."""
