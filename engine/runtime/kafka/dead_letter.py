"""Dead-lettering a record: its bytes and key as they were, where it came from and why, in
headers every reader of a dead-letter topic can rely on."""

from __future__ import annotations

from confluent_kafka import Message

from engine.topics import ERROR_HEADER

SOURCE_TOPIC_HEADER = "leadflow-source-topic"
SOURCE_PARTITION_HEADER = "leadflow-source-partition"
SOURCE_OFFSET_HEADER = "leadflow-source-offset"
# A dead-letter record's reason is for people; kept short so the record stays small.
MAX_ERROR_BYTES = 1000

Headers = list[tuple[str, str | bytes | None]]


def dead_letter_headers(
    error: str, topic: str | None, partition: int | None, offset: int | None
) -> Headers:
    """The headers of a dead-lettered record: the reason (cut to ``MAX_ERROR_BYTES``) and
    the record's position in its source topic."""
    return [
        (ERROR_HEADER, error.encode()[:MAX_ERROR_BYTES]),
        (SOURCE_TOPIC_HEADER, (topic or "").encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
    ]


def dead_letter_record(msg: Message, error: str) -> tuple[bytes | None, bytes | None, Headers]:
    """(value, key, headers) of ``msg`` dead-lettered for ``error``: its value and key exactly
    as they were (a null value stays null), so the record can be inspected or replayed."""
    return (
        msg.value(),
        msg.key(),
        dead_letter_headers(error, msg.topic(), msg.partition(), msg.offset()),
    )
