"""A new outbox on a device the cloud already knows, through the REAL ingest service:
quarantined at start, or lost with its disk.  Nothing is lost, nothing is held."""

from __future__ import annotations

import shutil
from pathlib import Path

from sync.outbox import Outbox
from sync.outbox.recovery import mark_corrupt
from sync.outbox.seq_floor import floor_path
from sync.protocol import Stream
from tests.sync.engine_harness import OUTBOX, append_events, drained, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, RunningIngest, lake_seqs, running_ingest
from tests.sync.tus_servers import stored_blob


async def _deliver_first_life(tmp_path: Path, cloud: RunningIngest) -> list[int]:
    """The device's first outbox: 150 events, all delivered; returns their seqs."""
    first = Outbox.open(tmp_path / "outbox", OUTBOX)
    try:
        seqs = await append_events(first, 150)
        async with engine_for(tmp_path, first, cloud.url, cloud.token):
            await wait_for(drained(first, Stream.EVENTS))
    finally:
        await first.close()
    return seqs


def _lose_disk(tmp_path: Path) -> None:
    """The outbox database and its floor file are gone (the data disk was replaced)."""
    shutil.rmtree(tmp_path / "outbox")
    floor_path(tmp_path / "outbox").unlink()


async def _deliver_second_life(tmp_path: Path, cloud: RunningIngest) -> list[int]:
    """150 other events recorded offline in a new outbox, then synced; the seqs they
    were delivered under (read from the lake)."""
    before = set(lake_seqs(cloud.settings.data_dir, Stream.EVENTS))
    second = Outbox.open(tmp_path / "outbox", OUTBOX)
    try:
        await append_events(second, 150, start=1000)
        async with engine_for(tmp_path, second, cloud.url, cloud.token) as (engine, _):
            await wait_for(drained(second, Stream.EVENTS), timeout=30)
            assert engine.progress().classes[Stream.EVENTS].stalled is None
    finally:
        await second.close()
    return sorted(set(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) - before)


async def test_an_outbox_quarantined_at_start_continues_the_seqs(tmp_path: Path) -> None:
    """Before the floor file, the new database counted from 1 again: its first batch
    was a 409 (same id, other rows) and the stream was held for good."""
    async with running_ingest(tmp_path / "cloud") as cloud:
        old = await _deliver_first_life(tmp_path, cloud)
        mark_corrupt(tmp_path / "outbox", "test: corruption found at run time")
        new = await _deliver_second_life(tmp_path, cloud)
        lake = lake_seqs(cloud.settings.data_dir, Stream.EVENTS)
        assert len(new) == 150 and min(new) > max(old)
        assert sorted(lake) == old + new  # every event once, none overwritten


async def test_a_lost_disk_renumbers_what_was_recorded_offline(tmp_path: Path) -> None:
    """Database and floor file gone (disk replaced), events recorded before the first
    handshake: they are renumbered above what the cloud holds and all delivered,
    and nothing the cloud holds is acked away or overwritten."""
    async with running_ingest(tmp_path / "cloud") as cloud:
        old = await _deliver_first_life(tmp_path, cloud)
        puts_before = len([1 for _, m, _ in cloud.requests if m == "PUT"])
        _lose_disk(tmp_path)
        new = await _deliver_second_life(tmp_path, cloud)
        lake = lake_seqs(cloud.settings.data_dir, Stream.EVENTS)
        assert len(new) == 150 and min(new) > max(old)
        assert sorted(lake) == old + new
        puts = [p for _, m, p in cloud.requests if m == "PUT"][puts_before:]
        first_new = min(new)
        assert all(int(p.rsplit(".", 1)[-1].split("-")[0]) >= first_new for p in puts), puts


async def test_a_raw_frame_of_a_renumbered_event_is_found_by_its_new_seq(
    tmp_path: Path,
) -> None:
    """The appliance indexed the frame by the event's seq before the renumbering; the
    cloud asks by the seq it knows (the new one): delivered, not 'unknown'."""
    async with running_ingest(tmp_path / "cloud") as cloud:
        await _deliver_first_life(tmp_path, cloud)
        _lose_disk(tmp_path)
        second = Outbox.open(tmp_path / "outbox", OUTBOX)
        blobs = BlobDir(tmp_path / "blobs")
        try:
            old = await append_events(second, 20, start=1000)
            ref = blobs.add(b"blurred frame of event 7", seq=old[7])
            async with engine_for(tmp_path, second, cloud.url, cloud.token, blobs) as (engine, _):
                await wait_for(drained(second, Stream.EVENTS))
                new = sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS))[-20:]
                assert new[7] != old[7] and second.seq_then(new[7]) == old[7]
                await cloud.add_raw_request("rr-7", seq=new[7])
                engine.sync_now()
                raw = engine.progress
                await wait_for(lambda: raw().classes[Stream.RAW_REQUESTED].sent_records == 1)
                engine.sync_now()
                await wait_for(lambda: not engine.state.state.delivered)
                assert not engine.state.state.unknown
        finally:
            await second.close()
        assert await cloud.raw_request_state("rr-7") == "delivered"
        assert stored_blob(cloud.settings.data_dir, ref.sha256) == b"blurred frame of event 7"
