"""Issue 5, end to end: a real ``yardlink ingest serve`` and a real appliance
(``yardlink appliance run`` with the real models) on loopback, the link emulator between
them, and every kind of fault at random moments.

What runs: the test renders frames from a seeded :class:`SyntheticYardCamera` (clean
frames, every one with a UK plate, so the plate set is known) and pushes them over the
appliance's local API at the pace the appliance processes them.  Meanwhile a seeded fault
loop, in random order and each kind at least twice: SIGKILL + restart of the appliance,
SIGKILL + restart of the ingest service, an upstream cut at a random byte (mid-request),
an upstream cut while a tus chunk is in flight (mid-chunk), a downstream cut after the
server read the request but before the client got the answer, offline flaps and a drop
of the link rate; the link is throttled (4-8 Mbit/s, 20 ms RTT) throughout.  An operator
asks for the raw frames of some events once they are in the lake (both frames the
appliance sampled and frames it only kept encrypted).

How the test knows the exact set of events the appliance made durable (N):

* Every events record the appliance makes durable is either still in its outbox or was
  acknowledged by the cloud, and the cloud acknowledges a batch only once its lake file
  is durable (events never expire and are never evicted).  At the end the appliance is
  restarted with no frame pushed and the faults stopped, and the test waits until its
  outbox holds 0 events; after the last SIGTERM it opens the outbox itself and checks it
  again.  So every durable record is in the lake: no loss.
* Nothing else reaches the lake: every lake row names this device and a frame the test
  pushed (``raw_sha256`` is the sha256 of the pushed JPEG), so lake = durable records.
* No duplicate: every seq appears once, and so does every (frame, task) pair (a record
  re-appended under a new seq would show up as a second row for the same frame and task).
* Cross-checks that do not rely on the outbox: every record the appliance published on
  its SSE feed (``/v1/events`` publishes a record only after it is durable) is in the lake
  with the same task and frame; and every frame the last appliance process accepted
  (202), which was then stopped with SIGTERM (it drains its queue), has both its events.

Raw blobs (M): every blob in the cloud's store has the sha256 of its name and is a blurred
copy the appliance indexed (``raw-index.jsonl``), never an original; every requested one
is delivered, and it is the blurred copy indexed for that frame.  Privacy: no plate of any
pushed frame appears in clear anywhere in the cloud's data directory (nor in its log), and
the scanner is shown to find a plate in a Parquet file and in a text file first, so that
check cannot pass vacuously.  In the pixels: the frames carry real faces, every one in a
blob is filled, and the independent check (``appliance.privacy.masking_check``, shown to
find faces and plates left in clear in tests/appliance/privacy) finds no face and reads
no plate in any blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appliance.privacy.masking_check import (
    MIN_FACE_DETAIL,
    box_detail,
    covered_fraction,
    fill_fraction,
)
from appliance.privacy.masking_eval import load_models
from appliance.privacy.redaction import Box
from appliance.sources.frame_metadata import encode_frame_metadata
from appliance.sources.synthetic import SyntheticYardCamera
from sync.linkemu import Direction, LinkConditions, LinkEmulator
from sync.outbox import Outbox
from sync.protocol import Stream
from sync.settings import OutboxSettings
from tests.support.e2e_site import appliance_site_toml
from yardlink.localstack import (
    ApplianceProcess,
    IngestProcess,
    StackError,
    find_in_clear,
    lake_rows,
)

REPO = Path(__file__).resolve().parents[1]
DEVICE, SITE, CAMERA = "gate-01", "yard-e2e", "gate-in"
TECHNICIAN = "technician-token-end-to-end-Vb81qZr3"  # 32+ characters, as the config asks
TASKS = {"gate_ocr", "face_anonymize"}
FAULTS = ("appliance", "ingest", "cut-up", "cut-chunk", "cut-down", "flap", "throttle", "raw")
RATES = (4e6, 8e6)


@dataclass
class Pushed:
    """Every frame the test tried to push (accepted or not: a refused push whose answer was
    lost may still have been processed) and what the test knows about it."""

    plates: set[str] = field(default_factory=set)
    by_sha: dict[str, int] = field(default_factory=dict)  # sha256 of the JPEG -> frame index
    accepted: list[tuple[float, str]] = field(default_factory=list)  # (sent at, sha256)
    refused: int = 0
    # sha256 -> each real face's box and the spread of its pixels in the frame as pushed
    faces: dict[str, list[tuple[Box, float]]] = field(default_factory=dict)


@dataclass
class Yard:
    root: Path
    ingest: IngestProcess
    appliance: ApplianceProcess
    emu: LinkEmulator
    operator: str
    pushed: Pushed = field(default_factory=Pushed)
    seen: dict[int, tuple[str, str]] = field(default_factory=dict)  # SSE: seq -> (task, sha)
    requests: dict[str, int] = field(default_factory=dict)  # request id -> seq
    request_states: dict[str, str] = field(default_factory=dict)  # at the end
    faults: Counter[str] = field(default_factory=Counter)
    cuts_fired: Counter[str] = field(default_factory=Counter)
    quiet_since: float = float("inf")  # faults over; the last appliance process is running

    @property
    def cloud_dir(self) -> Path:
        return self.ingest.data_dir

    @property
    def site_dir(self) -> Path:
        return self.root / "site" / "var"


def site_toml(root: Path, cloud_url: str, token: str) -> Path:
    return appliance_site_toml(
        root,
        cloud_url,
        token,
        device=DEVICE,
        site=SITE,
        camera=CAMERA,
        technician=TECHNICIAN,
        sync={"chunk_min_bytes": 16 << 10, "chunk_max_bytes": 96 << 10, "chunk_target_s": 0.2},
        link={"request_timeout_s": 10.0},
        sampling={"every_n_frames": 4, "max_per_hour": 10_000, "low_confidence_every_n": 0},
    )


def read_raw_index(site_dir: Path) -> dict[int, str]:
    """The appliance's index of blurred copies: events seq -> sha256 of the blurred JPEG."""
    index: dict[int, str] = {}
    path = site_dir / "raw-index.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                index[int(entry["seq"])] = str(entry["sha256"])
    return index


def frames_in_lake(cloud_dir: Path) -> dict[str, list[int]]:
    """sha256 of the original frame -> the seqs of its events in the lake."""
    frames: dict[str, list[int]] = {}
    for row in lake_rows(cloud_dir):
        frames.setdefault(row["raw_sha256"], []).append(row["seq"])
    return frames


# ---------------------------------------------------------------------- background tasks


def gate_metadata(index: int) -> dict[str, Any]:
    """What the gate sends with frame ``index`` in ``X-Frame-Metadata``."""
    return {"lane": 1 + index % 4, "transaction_id": f"T-{index:05d}"}


async def push_frames(yard: Yard, camera: SyntheticYardCamera, stop: asyncio.Event) -> None:
    """Push frame 0, 1, 2, ... at the pace the appliance drains its queue."""

    def render(index: int) -> tuple[bytes, set[str], list[tuple[Box, float]]]:
        frame = camera.frame(index)
        plates = {t.value for t in frame.truths if t.kind == "plate"}
        faces = [(t.box, face_detail(frame.image_bgr, t.box)) for t in frame.faces]
        return frame.encode(), plates, faces

    index = 0
    while not stop.is_set():
        jpeg, plates, faces = await asyncio.to_thread(render, index)
        sha = hashlib.sha256(jpeg).hexdigest()
        yard.pushed.plates |= plates
        yard.pushed.faces[sha] = faces
        yard.pushed.by_sha[sha] = index
        index += 1
        sent_at = time.monotonic()
        try:
            answer = await asyncio.to_thread(
                yard.appliance.push_frame, CAMERA, jpeg, gate_metadata(index - 1)
            )
        except (StackError, OSError):
            yard.pushed.refused += 1  # down, restarting or stopping: not an event
            await asyncio.sleep(0.2)
            continue
        yard.pushed.accepted.append((sent_at, sha))
        # 202: frames queued in memory; 201: pushed frames in the spool, not yet read
        if answer.get("queue_depth", answer.get("spool_depth", 0)) >= 2:
            await asyncio.sleep(0.4)


async def follow_events(yard: Yard, stop: asyncio.Event) -> None:
    """Collect every record the appliance publishes on its SSE feed (after durability);
    reconnect after each restart."""
    headers = {"Authorization": f"Bearer {TECHNICIAN}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            url = yard.appliance.api_url
            try:
                async with session.get(f"{url}/v1/events", headers=headers) as response:
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            event = json.loads(line[6:])
                            yard.seen[event["seq"]] = (event["task"], event["raw_sha256"])
            except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError):
                pass
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------------- faults


async def wait_cut(yard: Yard, kind: str, before: int, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if yard.emu.stats.cuts > before:
            yard.cuts_fired[kind] += 1
            return True
        await asyncio.sleep(0.02)
    yard.emu._cut = None  # nothing crossed the link in time; do not let it fire later
    return False


async def upload_in_flight(yard: Yard, timeout: float = 10.0) -> dict[str, Any] | None:
    """The tus upload the appliance is sending now (from /v1/status), if one starts soon."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(StackError, OSError):
            status = await asyncio.to_thread(yard.appliance.get, "/v1/sync")
            upload = status.get("upload")
            if upload and upload["length"] - upload["offset"] > 8192:
                result: dict[str, Any] = upload
                return result
        await asyncio.sleep(0.03)
    return None


async def request_raw(yard: Yard, rng: random.Random) -> None:
    """Ask for the raw frame of one event in the lake: alternately one whose frame the
    appliance sampled (blurred copy indexed) and one it only kept."""
    frames = await asyncio.to_thread(frames_in_lake, yard.cloud_dir)
    index = read_raw_index(yard.site_dir)
    asked = set(yard.requests.values())
    want_sampled = len(yard.requests) % 2 == 0
    candidates = sorted(
        seq
        for seqs in frames.values()
        if not asked & set(seqs) and any(s in index for s in seqs) == want_sampled
        for seq in seqs
    )
    if not candidates:
        return
    seq = rng.choice(candidates)
    answer = await asyncio.to_thread(yard.ingest.request_raw, yard.operator, DEVICE, seq)
    yard.requests[answer["request_id"]] = seq


async def fault(yard: Yard, kind: str, rng: random.Random) -> None:
    if kind.startswith("cut-"):
        for _ in range(3):  # a cut waits for traffic; try again if none came in time
            if await cut(yard, kind, rng):
                break
    else:
        await other_fault(yard, kind, rng)
    yard.faults[kind] += 1


async def cut(yard: Yard, kind: str, rng: random.Random) -> bool:
    emu = yard.emu
    before = emu.stats.cuts
    if kind == "cut-up":  # mid-request, wherever the next upstream bytes are
        emu.cut_after(rng.randint(100, 20_000), Direction.UP)
    elif kind == "cut-chunk":  # mid-chunk of a tus upload
        upload = await upload_in_flight(yard)
        if upload is None:
            return False
        left = min(upload["length"] - upload["offset"], upload["chunk_bytes"])
        emu.cut_after(rng.randint(1000, max(1001, left // 2)), Direction.UP)
    else:  # cut-down: the server read the request; the answer is lost
        emu.cut_after(1, Direction.DOWN, min_up_bytes=rng.choice([0, 1000, 16 << 10]))
    return await wait_cut(yard, kind, before)


async def other_fault(yard: Yard, kind: str, rng: random.Random) -> None:
    emu = yard.emu
    if kind == "appliance":
        yard.appliance.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        await asyncio.to_thread(yard.appliance.start)
    elif kind == "ingest":
        yard.ingest.kill()
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await asyncio.to_thread(yard.ingest.start)
    elif kind == "flap":
        emu.set_online(False)
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        emu.set_online(True)
    elif kind == "throttle":
        emu.conditions.rate_bps = 1e6
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        emu.conditions.rate_bps = rng.choice(RATES)
    elif kind == "raw":
        await request_raw(yard, rng)


async def wait_until(condition: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.3)


async def drain_report(yard: Yard, log_lines: int = 60) -> str:
    """What a drain that did not end leaves to read: the appliance's sync state, the raw
    requests' states and the tail of its log (a CI run keeps nothing else)."""
    try:
        sync = json.dumps(await asyncio.to_thread(yard.appliance.get, "/v1/sync"))
    except StackError as error:
        sync = f"(no /v1/sync: {error})"
    log = yard.appliance.log_path
    tail = log.read_text(errors="replace").splitlines()[-log_lines:] if log.exists() else []
    return "\n".join(
        [
            f"raw requests: {yard.request_states}",
            f"appliance /v1/sync: {sync}",
            f"last {len(tail)} lines of {log}:",
            *tail,
        ]
    )


# ---------------------------------------------------------------------- the scenario


async def run_yard(tmp_path: Path, *, seed: int, rounds: int, warmup_s: float) -> Yard:
    rng = random.Random(seed)
    ingest = IngestProcess(tmp_path / "cloud")
    token = ingest.add_device(DEVICE, SITE)
    operator = ingest.add_operator("ops")
    await asyncio.to_thread(ingest.start)
    conditions = LinkConditions(rtt_s=0.020, rate_bps=rng.choice(RATES))
    emu = LinkEmulator(("127.0.0.1", ingest.port), conditions)
    stop_push, stop_events = asyncio.Event(), asyncio.Event()
    background: list[asyncio.Task[None]] = []
    appliance: ApplianceProcess | None = None
    try:
        async with emu:
            config = site_toml(tmp_path, emu.url, token)
            appliance = ApplianceProcess(config, TECHNICIAN)
            yard = Yard(tmp_path, ingest, appliance, emu, operator)
            await asyncio.to_thread(appliance.start)
            camera = SyntheticYardCamera(seed, plate_probability=1.0, difficulty="clean")
            background = [
                asyncio.create_task(push_frames(yard, camera, stop_push)),
                asyncio.create_task(follow_events(yard, stop_events)),
            ]
            await asyncio.sleep(warmup_s)
            plan = [kind for kind in FAULTS for _ in range(rounds)]
            rng.shuffle(plan)  # every kind of fault, several times, in random order
            for kind in plan:
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                await fault(yard, kind, rng)
            deadline = time.monotonic() + 30
            while len(yard.requests) < 2 * rounds:  # not enough in the lake yet at the time
                assert time.monotonic() < deadline, "no event in the lake to ask raw for"
                await request_raw(yard, rng)
                await asyncio.sleep(0.5)

            # Quiet link; the last appliance process keeps accepting frames for a moment,
            # then stops pushing and is stopped with SIGTERM (it drains its queue).
            await emu.stop_flapping()
            yard.quiet_since = time.monotonic()
            await asyncio.sleep(3.0)
            stop_push.set()
            await background[0]
            status = await asyncio.to_thread(appliance.get, "/v1/status")
            assert status["dropped_frames"] == {}, "frames dropped: accepted != processed"
            await asyncio.to_thread(appliance.stop)
            assert appliance.proc is not None and appliance.proc.returncode == 0

            # Restart with nothing pushed; wait until the outbox is empty and every raw
            # request is delivered (a delivery is confirmed at the next handshake).
            await asyncio.to_thread(appliance.start)

            async def drained() -> bool:
                status = await asyncio.to_thread(appliance.get, "/v1/status")
                classes = status["outbox"]["classes"]
                if any(classes.get(c, {}).get("records", 0) for c in ("events", "raw_sampled")):
                    return False
                if classes.get("raw_requested", {}).get("records", 0):
                    return False
                await asyncio.to_thread(appliance.post, "/v1/sync/now")
                for request_id in yard.requests:
                    answer = await asyncio.to_thread(ingest.raw_request, operator, request_id)
                    yard.request_states[request_id] = answer["state"]
                return set(yard.request_states.values()) == {"delivered"}

            try:
                await wait_until(drained, "the outbox is empty and raw requests delivered", 60)
            except AssertionError as timed_out:  # say what the appliance was doing
                raise AssertionError(f"{timed_out}\n{await drain_report(yard)}") from None
            stop_events.set()
            await asyncio.to_thread(appliance.stop)
            assert appliance.proc is not None and appliance.proc.returncode == 0
        return yard
    finally:
        stop_push.set()
        stop_events.set()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if appliance is not None:
            appliance.stop()
        ingest.stop()


async def check_yard(yard: Yard, rounds: int) -> None:
    cloud_dir = yard.cloud_dir
    pushed = yard.pushed

    # The faults really happened.
    assert yard.appliance.kills >= 2 and yard.ingest.kills >= 2
    assert all(yard.faults[kind] >= rounds for kind in FAULTS), yard.faults
    for kind in ("cut-up", "cut-chunk", "cut-down"):
        assert yard.cuts_fired[kind] >= 2, (kind, yard.cuts_fired)

    # Nothing durable is left on site: every events record went to the lake.
    outbox = Outbox.open(yard.site_dir / "outbox", OutboxSettings(min_free_disk_bytes=0))
    try:
        per_class = outbox.stats().per_class
        for cls in (Stream.EVENTS, Stream.RAW_SAMPLED, Stream.RAW_REQUESTED):
            assert per_class[cls].records == 0, (cls, per_class[cls])
    finally:
        await outbox.close()

    # Exactly once, and only records of frames the test pushed.
    rows = lake_rows(cloud_dir)
    seqs = [row["seq"] for row in rows]
    dup = [seq for seq, n in Counter(seqs).items() if n > 1]
    assert not dup, f"duplicate seqs in the lake: {dup[:20]}"
    pairs = Counter((row["raw_sha256"], row["task"]) for row in rows)
    assert max(pairs.values()) == 1, "a frame's task result is in the lake twice"
    for row in rows:
        assert (row["device_id"], row["site_id"], row["camera_id"]) == (DEVICE, SITE, CAMERA)
        assert row["task"] in TASKS
        assert row["raw_sha256"] in pushed.by_sha, "a lake event of a frame never pushed"
        gate = gate_metadata(pushed.by_sha[row["raw_sha256"]])
        assert row["frame_metadata"] == encode_frame_metadata(gate), "X-Frame-Metadata lost"
    by_seq = {row["seq"]: row for row in rows}
    missing = sorted(set(yard.seen) - set(by_seq))
    assert not missing, f"published (durable) on site, not in the lake: {missing[:20]}"
    for seq, (task, sha) in yard.seen.items():
        assert (by_seq[seq]["task"], by_seq[seq]["raw_sha256"]) == (task, sha)
    final = {sha for sent_at, sha in pushed.accepted if sent_at > yard.quiet_since}
    assert final, "the last appliance process accepted no frame"
    for sha in final:  # accepted by the process stopped with SIGTERM: fully processed
        assert {pairs.get((sha, task), 0) for task in TASKS} == {1}, sha
    assert len(rows) >= 40 and len(yard.seen) >= len(rows) // 4, (len(rows), len(yard.seen))

    # Raw blobs: named by their sha256, blurred copies only, every requested one delivered.
    index = read_raw_index(yard.site_dir)
    blobs = {p.name: p for p in (cloud_dir / "blobs").rglob("*") if p.is_file()}
    for name, path in blobs.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == name
    assert set(blobs) <= set(index.values()), "a blob in the cloud that is no blurred copy"
    assert not set(blobs) & set(pushed.by_sha), "an original (unblurred) frame left the site"
    sampled_missing = set(index.values()) - set(blobs)
    assert len(sampled_missing) <= 2 * yard.appliance.kills, sampled_missing
    frames = frames_in_lake(cloud_dir)
    frame_of = {seq: sha for sha, frame_seqs in frames.items() for seq in frame_seqs}
    assert len(yard.requests) >= 2 * rounds
    for request_id, seq in yard.requests.items():
        assert yard.request_states[request_id] == "delivered", (request_id, seq)
        copies = {index[s] for s in frames[frame_of[seq]] if s in index}
        assert len(copies) == 1, (seq, copies)
        blurred = blobs[copies.pop()].read_bytes()
        image = cv2.imdecode(np.frombuffer(blurred, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (720, 1280)
    assert len(blobs) >= 4

    # Privacy: the OCR did read plates (so there were tokens to leak), none is in clear.
    tokens = [r["value"] for row in rows for r in row["results"] if r["kind"] == "plate"]
    assert len(tokens) >= 10 and not set(tokens) & pushed.plates
    assert find_in_clear(cloud_dir, pushed.plates) == []
    assert find_in_clear(yard.ingest.log_path.parent, pushed.plates) == []

    # Faces and plates in pixels: the frames had real faces, the pipeline found them and
    # filled them; every blob the cloud holds is looked at again by the independent check
    # (not the pass that decided what to blur), which finds no face anywhere in it (not
    # only on the true faces' boxes) and reads no plate.
    pixels = pixel_privacy(blobs, index, frame_of, pushed)
    assert pixels["faces_in_blobs"] >= 1, pixels
    # a face left with its detail is named (its frame: render it again with the camera's
    # seed) with how much of its box is fill: hardly any, the face task did not find it
    # (a face in clear); most of it, the boxes found cover it but for a strip
    assert pixels["faces_blurred"] == pixels["faces_in_blobs"], pixels
    assert pixels["independent_faces_found"] == [], pixels
    assert pixels["independent_plates_read"] == [], pixels
    found = [r for row in rows if row["task"] == "face_anonymize" for r in row["results"]]
    assert sum(r["kind"] == "face" for r in found) >= 1  # the pipeline found faces
    summary = {
        "events_N": len(rows),
        "frames_in_lake": len(frames),
        "blobs_M": len(blobs),
        "indexed_not_sent": len(sampled_missing),
        "pushed": len(pushed.by_sha),
        "accepted": len(pushed.accepted),
        "refused": pushed.refused,
        "sse_seen": len(yard.seen),
        "raw_requests": len(yard.requests),
        "kills": {"appliance": yard.appliance.kills, "ingest": yard.ingest.kills},
        "faults": dict(yard.faults),
        "cuts_fired": dict(yard.cuts_fired),
        "link": {"cuts": yard.emu.stats.cuts, "refused": yard.emu.stats.refused},
        "plate_tokens": len(tokens),
        "faces_in_blobs": pixels["faces_in_blobs"],
        "faces_blurred": pixels["faces_blurred"],
        "independent_faces_found": len(pixels["independent_faces_found"]),
        "independent_plates_read": len(pixels["independent_plates_read"]),
    }
    print("end-to-end:", json.dumps(summary))


# of a true face's box, as fill, for it to count as blurred whatever its detail: fills of
# overlapping boxes meet in a step that ``box_detail`` counts (no pixel of the face is
# left); true faces released as JPEG hold at most ~0.13 (``masking_check.fill_fraction``)
FILLED_FACE_SHARE = 0.9


def face_detail(image: np.ndarray, box: Box) -> float:
    """The detail of a face box's pixels, as the independent check judges it (a face
    has eyes, brows and a mouth; a filled box keeps none of them)."""
    return box_detail(image, box)


def on_face(truth: Box, found: Box) -> bool:
    """Whether a box the check found lies on a true face (over 30% of it)."""
    return covered_fraction(truth, [found], margin=0.0) > 0.3


def pixel_privacy(
    blobs: dict[str, Path], index: dict[int, str], frame_of: dict[int, str], pushed: Pushed
) -> dict[str, Any]:
    """Every blob: its frame's real faces blurred (the pixels there lost their detail:
    under what the check counts as a face's; or nearly all fill), and what the
    independent check finds: faces (anywhere, those on a true face's box named so) and
    plates read."""
    seq_of_blob = {sha: seq for seq, sha in index.items()}
    models = load_models(REPO / "models")
    faces_in, blurred, found, read = 0, 0, [], []
    not_blurred: list[str] = []
    try:
        for name, path in sorted(blobs.items()):
            image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            assert image is not None, f"blob {name} is not an image"
            original_sha = frame_of.get(seq_of_blob[name])
            faces = pushed.faces.get(original_sha, []) if original_sha else []
            for box, before in faces:
                faces_in += 1
                assert before >= MIN_FACE_DETAIL, (name, box, before)  # a face was there
                after, filled = face_detail(image, box), fill_fraction(image, box)
                if after < MIN_FACE_DETAIL or filled >= FILLED_FACE_SHARE:
                    blurred += 1
                else:  # its frame: SyntheticYardCamera(seed).frame(i)
                    not_blurred.append(
                        f"blob {name[:12]}: frame {pushed.by_sha.get(original_sha or '', -1)},"
                        f" face at {box}, detail {after:.1f} (was {before:.1f}),"
                        f" {filled:.0%} of its box filled"
                    )
            for detector, hits in models.check.faces_found_by(image).items():
                found += [
                    f"{name}: {detector} face at {hit}"
                    + (" on a true face" if any(on_face(box, hit) for box, _ in faces) else "")
                    for hit in hits
                ]
            read += [f"{name}: {p}" for p in models.check.plates_read(image, pushed.plates)]
    finally:
        models.close()
    return {
        "faces_in_blobs": faces_in,
        "faces_blurred": blurred,
        "faces_not_blurred": not_blurred,
        "independent_faces_found": found,
        "independent_plates_read": read,
    }


def test_the_plate_scanner_finds_plates(tmp_path: Path) -> None:
    """The PII check above cannot pass vacuously: the scanner finds a plate in a
    (compressed) Parquet file and in a text file."""
    camera = SyntheticYardCamera(3, plate_probability=1.0)
    plate = next(t.value for t in camera.frame(0).truths if t.kind == "plate")
    rng = random.Random(0)  # enough varied text that zstd entropy-codes the literals
    filler = ["".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ0123456789 ", k=40)) for _ in range(500)]
    table = pa.table({"value": [*filler[:250], f"x-{plate}-y", *filler[250:]]})
    pq.write_table(table, tmp_path / "rows.parquet", compression="zstd", write_statistics=False)
    assert plate.encode() not in (tmp_path / "rows.parquet").read_bytes()
    assert find_in_clear(tmp_path, [plate]) == [f"{tmp_path / 'rows.parquet'}: {plate}"]
    (tmp_path / "log.txt").write_text(f"seen {plate.replace(' ', '')}\n")
    assert len(find_in_clear(tmp_path, [plate, "ZZ99 ZZZ"])) == 2


@pytest.mark.timeout(480)  # ~60-90 s on a quiet 2-core machine; room for a loaded one
async def test_end_to_end_exactly_once_under_faults(tmp_path: Path) -> None:
    yard = await run_yard(tmp_path, seed=5, rounds=2, warmup_s=4.0)
    await check_yard(yard, rounds=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_end_to_end_soak(tmp_path: Path, seed: int) -> None:
    yard = await run_yard(tmp_path, seed=seed, rounds=5, warmup_s=8.0)
    await check_yard(yard, rounds=5)
