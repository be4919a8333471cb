"""Event streaming: every lead event of a flow, written as JSON to S3 or Azure Blob storage."""

from streamers.destinations import ObjectStore, PutResult, count_objects, open_store
from streamers.errors import DestinationError, ObjectNotFoundError
from streamers.worker import Streamer, run_streamers

__all__ = [
    "DestinationError",
    "ObjectNotFoundError",
    "ObjectStore",
    "PutResult",
    "Streamer",
    "count_objects",
    "open_store",
    "run_streamers",
]
