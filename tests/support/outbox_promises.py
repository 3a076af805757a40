"""The promises an outbox child made before it was killed, and the check of the
reopened outbox against them: shared by the SIGKILL test (tests/sync) and the
power-cut test (tests/powercut).

The child prints ``A <stream> <seq> <payload>`` once ``append`` returned and
``K telemetry <seq>`` once an ack returned; a stored payload is the promise text,
then optional padding after ``|``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sync.outbox import Outbox, OutboxRecord
from sync.protocol import Stream
from tests.support.outbox import assert_counts_true

__all__ = ["OutboxPromises", "read_all"]

PAD = b"|"  # payload = promise text, then optional padding after this byte
STREAMS = (Stream.CRITICAL, Stream.EVENTS, Stream.TELEMETRY)  # the classes the children append to


@contextmanager
def _errors_of(logger: str) -> Iterator[list[str]]:
    """The error lines ``logger`` logs meanwhile."""
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _Collect(logging.ERROR)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield lines
    finally:
        target.removeHandler(handler)


def read_all(outbox: Outbox, stream: Stream) -> list[OutboxRecord]:
    records: list[OutboxRecord] = []
    while batch := outbox.read(stream, records[-1].seq if records else 0, max_records=5000):
        records += batch
    return records


class OutboxPromises:
    """Every append and telemetry ack promised over the rounds of one database."""

    def __init__(self) -> None:
        self.appended: dict[Stream, dict[int, str]] = {s: {} for s in STREAMS}
        self.acked_telemetry = 0
        self.highest_seen = 0

    @property
    def appends(self) -> int:
        return sum(len(v) for v in self.appended.values())

    def take(self, lines: list[str]) -> int:
        """Record one round's promises; returns how many appends it promised."""
        seqs = []
        for line in lines:
            kind, stream_name, seq_text, *rest = line.split()
            stream, seq = Stream(stream_name), int(seq_text)
            if kind == "A":
                assert seq not in self.appended[stream], "a seq was handed out twice"
                self.appended[stream][seq] = rest[0]
                seqs.append(seq)
            else:
                self.acked_telemetry = max(self.acked_telemetry, seq)
        assert not seqs or min(seqs) > self.highest_seen, "a seq from an earlier life was reused"
        return len(seqs)

    async def check(self, path: Path) -> None:
        """Open the outbox at ``path`` as the appliance would and hold it to every promise."""
        with _errors_of("sync.outbox.store") as errors:
            outbox = Outbox.open(path)
        try:
            assert outbox.stats().quarantined == [], (
                "the outbox did not open after the crash or cut"
            )
            # each count is in its records' WriteBatch: no crash point splits them
            # (the open did not have to count a class again, and no read ran yet)
            assert errors == [], errors
            assert_counts_true(outbox)
            assert outbox.acked_watermark(Stream.TELEMETRY) >= self.acked_telemetry
            for stream, expected in self.appended.items():
                records = read_all(outbox, stream)
                seqs = [r.seq for r in records]
                assert seqs == sorted(set(seqs)), "order within a class, each once"
                stored = {r.seq: r.payload.split(PAD)[0].decode() for r in records}
                assert len(set(stored.values())) == len(stored), "a record stored twice"
                watermark = outbox.acked_watermark(stream)
                assert all(seq > watermark for seq in seqs), "an acked record came back"
                for seq, payload in expected.items():
                    if seq > watermark:
                        assert stored.get(seq) == payload, f"lost acknowledged {stream} {seq}"
                self.highest_seen = max([self.highest_seen, *seqs])
            self.highest_seen = max(self.highest_seen, outbox.stats().next_seq - 1)
        finally:
            await outbox.close()
