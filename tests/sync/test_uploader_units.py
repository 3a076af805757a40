"""Pure parts of the tus client and its state file: chunk sizing, headers, crash-safe JSON."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.engine_state import EngineStateFile
from sync.protocol import Stream, UploadMetadata
from sync.uploader import ChunkSizer, checksum_header, encode_metadata

SHA = "ab" * 32


def test_chunk_sizer_starts_small_and_tracks_rate() -> None:
    sizer = ChunkSizer(64 << 10, 8 << 20, target_s=5)
    assert sizer.next_size() == 64 << 10
    sizer.observe(250_000, 1.0)  # 2 Mbit/s
    sizes = [sizer.next_size() for _ in range(3)]
    assert sizes[0] == 4 * (64 << 10)  # ramps up at most 4x per chunk
    assert sizes[-1] == 1_250_000  # 5 s at 250 kB/s
    sizer.observe(10_000_000, 0.1)  # very fast link: capped at the max
    for _ in range(6):
        size = sizer.next_size()
    assert size == 8 << 20


@given(
    samples=st.lists(st.tuples(st.integers(0, 10**8), st.floats(0, 100)), min_size=0, max_size=30),
    lo=st.integers(1024, 1 << 20),
    span=st.integers(0, 1 << 24),
)
def test_chunk_size_always_within_bounds(
    samples: list[tuple[int, float]], lo: int, span: int
) -> None:
    sizer = ChunkSizer(lo, lo + span, target_s=2)
    for nbytes, seconds in samples:
        sizer.observe(nbytes, seconds)
        assert lo <= sizer.next_size() <= lo + span


def test_chunk_sizer_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="min_bytes"):
        ChunkSizer(10, 5, 1)


def test_metadata_header_is_tus_encoded() -> None:
    meta = UploadMetadata(sha256=SHA, stream=Stream.RAW_REQUESTED, seq=42, request_id="rr-1")
    pairs = dict(item.split(" ") for item in encode_metadata(meta).split(","))
    decoded = {k: base64.b64decode(v).decode() for k, v in pairs.items()}
    assert decoded == {
        "sha256": SHA,
        "stream": "raw_requested",
        "seq": "42",
        "request_id": "rr-1",
    }


def test_checksum_header_is_sha256_base64() -> None:
    algo, value = checksum_header(b"chunk").split(" ")
    assert algo == "sha256"
    assert base64.b64decode(value) == hashlib.sha256(b"chunk").digest()


def test_state_file_survives_reopen_and_quarantines_garbage(tmp_path: Path) -> None:
    path = tmp_path / "sync-state.json"
    state = EngineStateFile(path)
    state.remember_upload(SHA, "/v1/uploads/abc")
    assert EngineStateFile(path).upload_path(SHA) == "/v1/uploads/abc"
    state.forget_upload(SHA)
    assert EngineStateFile(path).upload_path(SHA) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sync-state.json"]  # no temp file
    path.write_text('{"uploads": 7}')
    fresh = EngineStateFile(path)
    assert fresh.state.uploads == {}
    assert (tmp_path / "sync-state.corrupt").exists()


def test_state_file_of_binary_garbage_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "sync-state.json"
    path.write_bytes(b"\xff\xfe\x00 not json, not utf-8")
    fresh = EngineStateFile(path)
    assert fresh.state.uploads == {}
    assert (tmp_path / "sync-state.corrupt").read_bytes().startswith(b"\xff\xfe")


_SAVE_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from sync.engine_state import EngineStateFile, StateFileError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails like ENOSPC
state = EngineStateFile(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
for i in range(20):
    state.state.uploads[f"{i:064x}"] = f"/v1/uploads/{i}"
try:
    state.save()
except StateFileError as exc:
    print("StateFileError", exc)
else:
    print("saved")
"""


def test_save_on_a_full_disk_raises_and_keeps_the_previous_file(tmp_path: Path) -> None:
    """A short write (the disk filled up) must never replace the good file with half a one."""
    path = tmp_path / "sync-state.json"
    EngineStateFile(path).remember_upload(SHA, "/v1/uploads/abc")
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", _SAVE_ON_A_FULL_DISK, str(path)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith("StateFileError"), done.stdout + done.stderr
    assert "previous state is kept" in done.stdout
    assert path.read_bytes() == before
    assert EngineStateFile(path).upload_path(SHA) == "/v1/uploads/abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sync-state.json"]  # no tmp left
