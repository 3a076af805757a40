"""Spool files are read once, moved only once durable, and never lost on restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.daemon import Daemon
from appliance.sources.synthetic import SyntheticYardCamera
from tests.appliance.daemon_harness import read_events, site_config, wait_for


def _drop(spool: Path, camera: str, start: int, count: int) -> list[str]:
    (spool / camera).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(start, start + count):
        name = f"frame-{index:04d}.jpg"
        (spool / camera / name).write_bytes(SyntheticYardCamera(5).frame(index).encode())
        names.append(name)
    return names


async def test_files_are_read_once_moved_when_durable_and_survive_a_restart(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    config = site_config(
        tmp_path,
        sources={"cameras": [{"id": "gate-in"}], "spool_dir": str(spool), "spool_poll_s": 0.05},
        inference={"face_anonymize": {"enabled": False}},
    )
    (spool / "gate-in").mkdir(parents=True)
    (spool / "gate-in" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    first = _drop(spool, "gate-in", 0, 3)
    daemon = Daemon(config)
    await daemon.start()
    processed = spool / "processed" / "gate-in"
    try:
        await wait_for(lambda: processed.is_dir() and len(list(processed.iterdir())) == 3)
        await asyncio.sleep(0.3)  # several more scans: nothing is read again
    finally:
        await daemon.stop()
    assert sorted(p.name for p in processed.iterdir()) == first
    assert (spool / "failed" / "gate-in" / "broken.jpg").exists()
    assert "cannot be decoded" in (spool / "failed" / "gate-in" / "broken.jpg.why").read_text()
    # files arriving while the daemon is down are processed after the restart
    second = _drop(spool, "gate-in", 3, 2)
    daemon = Daemon(config)
    await daemon.start()
    try:
        await wait_for(lambda: len(list(processed.iterdir())) == 5)
        await asyncio.sleep(0.3)
    finally:
        await daemon.stop()
    assert sorted(p.name for p in processed.iterdir()) == first + second
    assert not list((spool / "gate-in").iterdir())
    events = await read_events(Path(config.outbox.path))
    assert len(events) == 5 and {e["task"] for e in events} == {"gate_ocr"}
