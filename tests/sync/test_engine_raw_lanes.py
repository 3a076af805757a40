"""Several raw uploads in flight (sync.raw_lanes) against the REAL ingest service over
an emulated slow link: more than one at once, a raw_requested blob preempts the
raw_sampled uploads under way (they pause at a chunk boundary and resume), events
still go while raw flows, and every blob lands once, whole, with the outbox drained."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from sync.linkemu import LinkConditions, LinkEmulator
from sync.outbox import Outbox
from sync.protocol import Stream
from tests.sync.engine_harness import append_events, drained, engine_for, wait_for
from tests.sync.ingest_server import BlobDir, lake_seqs, running_ingest
from tests.sync.tus_servers import stored_blob

SAMPLED_BYTES = 1 << 20


async def test_requested_raw_and_events_go_while_sampled_uploads_wait(
    tmp_path: Path, outbox: Outbox
) -> None:
    blobs = BlobDir(tmp_path / "blobs")
    sampled = [blobs.add(os.urandom(SAMPLED_BYTES), seq=i) for i in range(4)]
    for ref in sampled:
        await outbox.append_blob_ref(Stream.RAW_SAMPLED, ref)
    requested = blobs.add(os.urandom(100_000), seq=99)
    conditions = LinkConditions(rtt_s=0.04, rate_bps=4e6)
    async with running_ingest(tmp_path / "cloud") as cloud:
        emu = LinkEmulator(("127.0.0.1", cloud.port), conditions)
        async with emu, engine_for(tmp_path, outbox, emu.url, cloud.token, blobs) as (engine, _):
            most_in_flight = 0

            def watch() -> None:
                nonlocal most_in_flight
                most_in_flight = max(most_in_flight, len(engine.uploader.uploads))

            # Wait until raw_sampled uploads are well under way (none near its end).
            def under_way() -> bool:
                watch()
                ups = engine.uploader.uploads.values()
                return any(u.offset >= 64 << 10 for u in ups)

            await wait_for(under_way)
            started = {
                sha for sha, u in engine.uploader.uploads.items() if u.offset < u.length // 2
            }
            assert started, "an upload was caught in its first half"
            await outbox.append_blob_ref(Stream.RAW_REQUESTED, requested)
            event_seqs = await append_events(outbox, 30)
            engine.notify()

            def requested_held() -> bool:
                watch()
                return outbox.stats().per_class[Stream.RAW_REQUESTED].records == 0

            await wait_for(requested_held)
            # the sampled uploads that were in their first half are not done yet
            unfinished = [
                sha for sha in started if stored_blob(cloud.settings.data_dir, sha) is None
            ]
            assert unfinished, "a raw_sampled upload under way waited for the requested blob"
            assert outbox.stats().per_class[Stream.EVENTS].records == 0  # events went too

            def sampled_drained() -> bool:
                watch()
                return drained(outbox, Stream.RAW_SAMPLED)()

            await wait_for(sampled_drained, 60)
            await asyncio.sleep(0.1)
            assert engine.running
        assert most_in_flight >= 2
        assert sorted(lake_seqs(cloud.settings.data_dir, Stream.EVENTS)) == event_seqs
        for ref in [*sampled, requested]:
            stored = stored_blob(cloud.settings.data_dir, ref.sha256)
            assert stored is not None and hashlib.sha256(stored).hexdigest() == ref.sha256
        progress = engine.progress().classes
        assert progress[Stream.RAW_SAMPLED].sent_records == len(sampled)
        assert progress[Stream.RAW_REQUESTED].sent_records == 1
        # No cut: each blob's bytes went once, and the events and handshakes sent beside
        # the uploads are not counted as a blob's (resent) bytes.
        assert progress[Stream.RAW_SAMPLED].sent_bytes == len(sampled) * SAMPLED_BYTES
        assert engine.progress().resent_bytes == 0
