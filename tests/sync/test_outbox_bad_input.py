"""Bad input to the outbox's public API: a typed error, never a raw traceback or a silent drop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sync.errors import OutboxClosed, PermanentSyncError, RecordRejected
from sync.outbox import BatchBoundary, BlobRef, Outbox
from sync.protocol import Stream

SHA = "ab" * 32
E = Stream.EVENTS


@pytest.mark.parametrize(
    "limits",
    [
        {"max_records": 0},
        {"max_records": -1},
        {"max_bytes": 0},
        {"max_records": None},
        {"max_bytes": None},
        {"max_records": "3"},
        {"max_records": 1.5},
        {"max_records": True},
    ],
)
async def test_read_limits_that_are_not_positive_ints_are_rejected(
    open_outbox: Callable[..., Outbox], limits: dict[str, object]
) -> None:
    outbox = open_outbox()
    await outbox.append_many(E, [b"a", b"b", b"c"])
    with pytest.raises(RecordRejected):
        outbox.read(E, **limits)  # type: ignore[arg-type]


@pytest.mark.parametrize("after_seq", [-1, 1.5, float("nan"), float("inf"), None, "1", True])
async def test_read_after_seq_that_is_not_a_seq_is_rejected(
    open_outbox: Callable[..., Outbox], after_seq: object
) -> None:
    outbox = open_outbox()
    await outbox.append_many(E, [b"a", b"b"])
    with pytest.raises(RecordRejected):
        outbox.read(E, after_seq)  # type: ignore[arg-type]


@pytest.mark.parametrize("after_seq", [2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**200])
async def test_read_after_any_possible_seq_is_empty(
    open_outbox: Callable[..., Outbox], after_seq: int
) -> None:
    outbox = open_outbox()
    await outbox.append_many(E, [b"a", b"b"])
    assert outbox.read(E, after_seq) == []


@pytest.mark.parametrize("up_to", [-1, 1.5, float("nan"), float("inf"), None, "3", True])
async def test_ack_up_to_that_is_not_a_seq_is_rejected_and_acks_nothing(
    open_outbox: Callable[..., Outbox], up_to: object
) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(E, [b"a", b"b"])
    with pytest.raises(RecordRejected):
        await outbox.ack(E, up_to)  # type: ignore[arg-type]
    assert [r.seq for r in outbox.read(E)] == seqs
    assert outbox.acked_watermark(E) == 0


async def test_ack_beyond_any_seq_is_clamped_to_the_committed_seq(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(E, [b"a", b"b"])
    assert await outbox.ack(E, 2**70) == 2
    assert outbox.acked_watermark(E) == seqs[-1]
    later = await outbox.append(E, b"c")
    assert [r.seq for r in outbox.read(E)] == [later]


@pytest.mark.parametrize(
    "boundary",
    [
        BatchBoundary(E, 1, 2**64, "big"),
        BatchBoundary(E, 2**64, 2**64 + 1, "big"),
        BatchBoundary(E, 1.5, 2, "float"),  # type: ignore[arg-type]
        BatchBoundary(E, 1, 2.0, "float"),  # type: ignore[arg-type]
        BatchBoundary(E, True, True, "bool"),
        BatchBoundary("events", 1, 2, "str class"),  # type: ignore[arg-type]
        BatchBoundary(None, 1, 2, "no class"),  # type: ignore[arg-type]
        BatchBoundary(E, 1, 2, b"bytes id"),  # type: ignore[arg-type]
        BatchBoundary(E, 1, 2, 5),  # type: ignore[arg-type]
        BatchBoundary(E, 1, 2, "\ud800"),
        "not a boundary",
        None,
    ],
    ids=repr,
)
async def test_pin_batch_with_a_bad_boundary_is_rejected(
    open_outbox: Callable[..., Outbox], boundary: object
) -> None:
    outbox = open_outbox()
    await outbox.append_many(E, [b"a", b"b"])
    with pytest.raises(RecordRejected):
        await outbox.pin_batch(boundary)  # type: ignore[arg-type]
    assert outbox.pinned_batches(E) == []


async def test_a_pin_beyond_the_committed_seq_is_rejected_not_kept_forever(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(Stream.TELEMETRY, [b"a", b"b"])
    with pytest.raises(RecordRejected):
        await outbox.pin_batch(BatchBoundary(Stream.TELEMETRY, seqs[0], 2**62, "ahead"))
    await outbox.ack(Stream.TELEMETRY, seqs[-1])
    assert outbox.pinned_batches(Stream.TELEMETRY) == []


@pytest.mark.parametrize("stream", ["events", None, 3])
async def test_class_lookups_with_a_bad_class_are_rejected(
    open_outbox: Callable[..., Outbox], stream: object
) -> None:
    outbox = open_outbox()
    with pytest.raises(RecordRejected):
        outbox.pinned_batches(stream)  # type: ignore[arg-type]
    with pytest.raises(RecordRejected):
        outbox.acked_watermark(stream)  # type: ignore[arg-type]


async def test_append_blob_ref_to_a_class_named_by_a_string_is_rejected(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    with pytest.raises(RecordRejected):
        await outbox.append_blob_ref("raw_sampled", BlobRef(SHA, 1))  # type: ignore[arg-type]
    assert outbox.stats().rejections == {"wrong_class": 1}


@pytest.mark.parametrize("expires_at", [2**1100, 10**400, -(2**1100)])
async def test_expires_at_too_large_for_a_float_is_rejected(
    open_outbox: Callable[..., Outbox], expires_at: int
) -> None:
    outbox = open_outbox()
    with pytest.raises(RecordRejected):
        await outbox.append(Stream.TELEMETRY, b"x", expires_at=expires_at)
    assert outbox.read(Stream.TELEMETRY) == []
    assert outbox.stats().rejections == {"wrong_type": 1}


@pytest.mark.parametrize("payloads", [None, 5, object()])
async def test_append_many_of_something_not_iterable_is_rejected(
    open_outbox: Callable[..., Outbox], payloads: object
) -> None:
    outbox = open_outbox()
    with pytest.raises(RecordRejected):
        await outbox.append_many(E, payloads)  # type: ignore[arg-type]
    assert outbox.stats().rejections == {"wrong_type": 1}


async def test_every_call_that_needs_the_database_after_close_is_outbox_closed(
    open_outbox: Callable[..., Outbox],
) -> None:
    outbox = open_outbox()
    seqs = await outbox.append_many(Stream.TELEMETRY, [b"a", b"b"])
    await outbox.close()
    with pytest.raises(OutboxClosed):
        await outbox.run_maintenance()
    with pytest.raises(OutboxClosed):
        await outbox.append_many(E, [])
    with pytest.raises(OutboxClosed):
        await outbox.ack(Stream.TELEMETRY, seqs[-1])
    with pytest.raises(OutboxClosed):
        await outbox.pin_batch(BatchBoundary(Stream.TELEMETRY, seqs[0], seqs[1], "b"))
    with pytest.raises(OutboxClosed):
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, BlobRef(SHA, 1))
    assert outbox.stats().per_class[Stream.TELEMETRY].records == 2  # stats never fail


async def test_open_refuses_a_path_that_is_a_regular_file_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("precious = true\n")
    with pytest.raises(PermanentSyncError, match="not a directory"):
        Outbox.open(path)
    assert path.read_text() == "precious = true\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.toml"]


async def test_open_refuses_a_directory_that_is_not_a_database_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "home"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(PermanentSyncError, match="not an outbox database"):
        Outbox.open(path)
    assert [p.name for p in path.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


@pytest.mark.parametrize(
    ("path", "settings"),
    [(None, None), (42, None), ("PATH", {"max_bytes": 1 << 30}), ("PATH", "sync")],
)
async def test_open_with_arguments_of_the_wrong_type_is_a_typed_error(
    tmp_path: Path, path: object, settings: object
) -> None:
    where = tmp_path / "outbox" if path == "PATH" else path
    with pytest.raises(PermanentSyncError):
        Outbox.open(where, settings)  # type: ignore[arg-type]
    assert not (tmp_path / "outbox").exists()
