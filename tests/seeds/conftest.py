"""The seed tests' fixture: the demo flow's run they walk, made once per session in its own
Postgres schema and topics (dropped after), so a run never depends on what other runs left."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from engine.settings import Settings
from tests.conftest import _delete_topics_of, _drop_schemas_of
from tests.seeds.demo_run import DemoRun, run_demo_flow


@pytest.fixture(scope="session")
def demo_run(stack: Settings) -> Iterator[DemoRun]:
    """The demo flow's run that the seed walks read (``tests.seeds.demo_run``), made once."""
    run_id = "seeds" + uuid.uuid4().hex[:9]
    try:
        yield run_demo_flow(stack, run_id)
    finally:
        _delete_topics_of(stack, run_id)
        _drop_schemas_of(stack, run_id)
