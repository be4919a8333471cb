"""The file formats on plain values: the CSV header is a contract, formulas never survive."""

from __future__ import annotations

import csv
import io

import pytest

from projectors.exports.formats import CSV_HEADER, FORMATS, neutralise


def test_the_csv_header_is_stable() -> None:
    # Spreadsheets and scripts address columns by position: append, never reorder.
    assert CSV_HEADER == (
        "event_id", "lead_id", "time", "flow_id", "flow_version", "step_id", "step_name",
        "type", "outcome", "reason", "ms", "total_ms", "cost", "revenue",
        "lead.first_name", "lead.last_name", "lead.email", "lead.phone_1", "lead.state",
        "lead.postal_code",
    )  # fmt: skip


@pytest.mark.parametrize(
    "cell",
    ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1", '=HYPERLINK("http://x")'],
)
def test_a_cell_that_could_start_a_formula_is_prefixed_with_a_quote(cell: str) -> None:
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Ada", "ada@example.com", "1+1", " =1", "", None])
def test_other_cells_are_left_alone(cell: str | None) -> None:
    assert neutralise(cell) == cell


def test_csv_rows_quote_separators_and_guard_text_but_not_numbers() -> None:
    cells: dict[str, str | None] = dict.fromkeys(CSV_HEADER)
    cells.update(
        {"event_id": "id,1", "step_name": 'Say "hi"', "reason": "=cmd|' /C calc'!A0",
         "cost": "-2.5", "lead.first_name": "-Ann"}
    )  # fmt: skip
    encoded = FORMATS["csv"].encode([tuple(cells.values())]).decode()
    assert encoded.endswith("\r\n")
    (parsed,) = csv.reader(io.StringIO(encoded, newline=""))
    written = dict(zip(CSV_HEADER, parsed, strict=True))
    assert written["event_id"] == "id,1" and written["step_name"] == 'Say "hi"'
    assert written["reason"] == "'=cmd|' /C calc'!A0"
    assert written["lead.first_name"] == "'-Ann"
    assert written["cost"] == "-2.5"  # written by Postgres, never by a lead: keeps its sign
    assert written["revenue"] == ""  # absent: an empty cell


def test_jsonl_writes_each_stored_snapshot_on_its_own_line() -> None:
    encoded = FORMATS["jsonl"].encode([('{"id": "a"}',), ('{"id": "b"}',)])
    assert encoded == b'{"id": "a"}\n{"id": "b"}\n'
    assert FORMATS["jsonl"].header() == b""


def test_sealed_values_are_opened_once_per_chunk_before_masking() -> None:
    from typing import Any

    import orjson

    from engine.sealing import new_data_key, reveal, seal

    lead, key = "01JABCDEFGHJKMNPQRSTVWXYZ0", new_data_key()
    token = seal(key, lead, "ada@example.com")
    calls: list[Any] = []

    def opener(value: Any, sees_pii: bool) -> Any:
        calls.append(value)
        return reveal(value, lambda _: key, sees_pii=sees_pii)

    snapshot = orjson.dumps({"lead_id": lead, "vars": {"lead.email": token}}).decode()
    jsonl = FORMATS["jsonl"]
    clear = jsonl.encode([(snapshot,), (snapshot,)], opener=lambda v: opener(v, True))
    masked = jsonl.encode([(snapshot,)], clear_text=False, opener=lambda v: opener(v, False))
    assert clear.count(b"ada@example.com") == 2 and b"enc:v1:" not in clear
    assert b"a***@example.com" in masked and b"ada@" not in masked
    assert len(calls) == 2  # one per chunk, not per row
    row = (None,) * 16 + (token, None, None, None)
    csv_masked = FORMATS["csv"].encode([row], clear_text=False, opener=lambda v: opener(v, False))
    assert b"a***@example.com" in csv_masked and b"enc:v1:" not in csv_masked
