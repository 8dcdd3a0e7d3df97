"""Events as stream entries: what goes in comes back, and malformed ones are refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from agentexec.eventlog.event import Event, seq_of
from agentexec.states import EventKind, Status

AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize("percentage", [None, 0, 55, 100])
def test_an_event_comes_back_from_its_fields_unchanged(percentage: int | None) -> None:
    event = Event(
        uuid.uuid4(),
        Status.RUNNING,
        'Quotes "x", a backslash \\, a newline\n and 🚀',
        percentage,
        kind=EventKind.REPORT,
        task="research",
        worker="celery@host",
        at=AT,
    )
    fields = event.fields()
    assert list(fields) == ["event"]  # one field: two strings per entry for readers to parse
    wire = {k.encode(): v.encode() for k, v in fields.items()}  # as redis-py returns them
    assert Event.from_entry(b"1700000000000-7", wire) == event.appended(seq_of("1700000000000-7"))
    assert Event.from_fields(fields) == event


def test_entries_of_the_first_format_one_field_per_attribute_are_malformed() -> None:
    legacy = {
        b"agent_id": str(uuid.uuid4()).encode(),
        b"kind": b"started",
        b"status": b"RUNNING",
        b"message": b"Task started",
        b"at": repr(AT.timestamp()).encode(),
    }
    with pytest.raises(ValueError, match="malformed event"):
        Event.from_entry("1700000000000-1", legacy)


@pytest.mark.parametrize(
    "fields",
    [
        {b"event": b"not json"},
        {b"event": b"[1, 2]"},
        {b"event": b'{"status": "RUNNING", "at": 1}'},  # no agent id
        {b"event": b'{"agent_id": "nope", "status": "RUNNING", "at": 1}'},
        {
            b"event": b'{"agent_id": "%s", "status": "DANCING", "at": 1}'
            % str(uuid.uuid4()).encode()
        },
        {b"event": b'{"agent_id": "%s", "status": "RUNNING"}' % str(uuid.uuid4()).encode()},
        {b"garbage": b"x"},
        {
            b"event": b'{"agent_id": "%s", "status": "RUNNING", "at": 1e300}'
            % str(uuid.uuid4()).encode()
        },
        {
            b"event": b'{"agent_id": "%s", "status": "RUNNING", "at": 1, "percentage": 1e400}'
            % str(uuid.uuid4()).encode()
        },
    ],
    ids=[
        "not JSON",
        "not an object",
        "no id",
        "bad id",
        "bad status",
        "no time",
        "neither",
        "time overflows",
        "percentage overflows",
    ],
)
def test_a_malformed_entry_is_a_value_error(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match=r"^malformed event"):
        Event.from_entry("1-0", fields)
