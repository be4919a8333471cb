"""The export file formats: what each selects from ``events`` and how rows become bytes.

``jsonl``: one event per line, the stored LeadConduit-style JSON (``snapshot``)
as Postgres prints jsonb: every field, keys in jsonb's order, no newline inside.

``csv``: the columns a seller opens in a spreadsheet, in this order and stable
(new columns are only ever appended)::

    event_id, lead_id, time, flow_id, flow_version, step_id, step_name, type,
    outcome, reason, ms, total_ms, cost, revenue,
    lead.first_name, lead.last_name, lead.email, lead.phone_1, lead.state, lead.postal_code

``time`` is the event's time in ISO 8601 UTC with milliseconds; numbers are
Postgres' shortest exact text; an absent value is an empty cell. The lead
columns are the standard LeadConduit fields: a fixed set, because flattening
every var would give each file its own, unbounded header; the whole lead is
in the ``jsonl`` format. RFC 4180 quoting, CRLF line ends, UTF-8 without BOM.

Formula injection: a text cell starting with ``= + - @``, a tab or a line
break is prefixed with ``'`` (OWASP's advice), because lead fields are typed
by whoever fills the web form and a spreadsheet would run ``=HYPERLINK(…)``.
Numeric columns are written by Postgres, never by a lead, and keep their sign.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import sql

from engine.masking import for_reader
from projectors.selection import ExportFormat

_LEAD_FIELDS = (
    "lead.first_name",
    "lead.last_name",
    "lead.email",
    "lead.phone_1",
    "lead.state",
    "lead.postal_code",
)

# (header, SQL expression giving the cell as text, may a lead have written it?)
_CSV_COLUMNS: tuple[tuple[str, sql.Composable, bool], ...] = (
    ("event_id", sql.SQL("id"), True),
    ("lead_id", sql.SQL("lead_id"), True),
    ("time", sql.SQL("""to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""), False),
    ("flow_id", sql.SQL("flow_id"), True),
    ("flow_version", sql.SQL("flow_version::text"), False),
    ("step_id", sql.SQL("step_id"), True),
    ("step_name", sql.SQL("step_name"), True),
    ("type", sql.SQL("type"), True),
    ("outcome", sql.SQL("outcome"), True),
    ("reason", sql.SQL("reason"), True),
    ("ms", sql.SQL("ms::text"), False),
    ("total_ms", sql.SQL("total_ms::text"), False),
    ("cost", sql.SQL("cost::text"), False),
    ("revenue", sql.SQL("revenue::text"), False),
    *(
        (field, sql.SQL("snapshot -> 'vars' ->> {}").format(sql.Literal(field)), True)
        for field in _LEAD_FIELDS
    ),
)

CSV_HEADER: tuple[str, ...] = tuple(header for header, _, _ in _CSV_COLUMNS)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(cell: str | None) -> str | None:
    """``cell`` made inert for spreadsheets: prefixed with ``'`` if it could start a formula."""
    if cell and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


@dataclass(frozen=True, slots=True)
class Format:
    """One file format: its select list, header, row encoding and HTTP/file naming."""

    name: ExportFormat
    select: sql.Composable
    content_type: str
    extension: str

    def header(self) -> bytes:
        return _csv_bytes([CSV_HEADER]) if self.name == "csv" else b""

    def encode(
        self,
        rows: Sequence[tuple[Any, ...]],
        *,
        clear_text: bool = True,
        opener: Callable[[Any], Any] | None = None,
    ) -> bytes:
        """The file bytes for ``rows`` (as selected by ``select``), after the header; lead
        data masked (``engine.masking``) unless ``clear_text``. ``opener``: sealed values
        (``engine.sealing``) opened for this reader, called once per chunk."""
        if opener is not None and any(_SEALED in str(cell) for row in rows for cell in row):
            rows = self._opened(rows, opener)
        if self.name == "jsonl":
            if clear_text:
                return "".join(f"{snapshot}\n" for (snapshot,) in rows).encode()
            return b"".join(
                orjson.dumps(for_reader(orjson.loads(snapshot), sees_pii=False)) + b"\n"
                for (snapshot,) in rows
            )
        if not clear_text:
            rows = [_masked(row) for row in rows]
        return _csv_bytes(_inert(row) for row in rows)

    def _opened(
        self, rows: Sequence[tuple[Any, ...]], opener: Callable[[Any], Any]
    ) -> list[tuple[Any, ...]]:
        if self.name == "jsonl":
            opened = opener([orjson.loads(snapshot) for (snapshot,) in rows])
            return [(orjson.dumps(snapshot).decode(),) for snapshot in opened]
        named = opener([dict(zip(CSV_HEADER, row, strict=True)) for row in rows])
        return [tuple(row[header] for header in CSV_HEADER) for row in named]


_SEALED = "enc:v1:"
_TEXT_CELLS = tuple(i for i, (_, _, from_lead) in enumerate(_CSV_COLUMNS) if from_lead)


def _masked(row: tuple[Any, ...]) -> tuple[Any, ...]:
    masked = for_reader(dict(zip(CSV_HEADER, row, strict=True)), sees_pii=False)
    return tuple(masked[header] for header in CSV_HEADER)


def _inert(row: tuple[Any, ...]) -> list[Any]:
    cells = list(row)
    for i in _TEXT_CELLS:
        cells[i] = neutralise(cells[i])
    return cells


def _csv_bytes(rows: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


FORMATS: dict[ExportFormat, Format] = {
    "csv": Format(
        "csv",
        sql.SQL(", ").join(expression for _, expression, _ in _CSV_COLUMNS),
        "text/csv; charset=utf-8",
        "csv",
    ),
    "jsonl": Format("jsonl", sql.SQL("snapshot::text"), "application/x-ndjson", "jsonl"),
}
