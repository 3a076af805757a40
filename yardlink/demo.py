"""``make demo``: one gate at a yard with a bad link, and the cloud that receives its data.

Everything is real and runs on this machine: ``yardlink ingest serve`` (the cloud), the
link emulator (2 Mbit/s, 150 ms round trip, going down every few seconds), and
``yardlink appliance run`` reading container codes and plates with the real models.
A synthetic gate camera pushes frames; half way through, the appliance and then the
cloud are killed with SIGKILL and restarted; an operator asks for one raw frame.  At the
end the demo checks what the cloud holds and says what it found.

    python -m yardlink.demo [--seconds 40] [--work-dir var/demo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.local_auth import make_token
from appliance.privacy.masking_check import (
    INDEPENDENT_FACE_MIN_SCORE,
    MASKED_COVERAGE,
    MIN_FACE_DETAIL,
    box_detail,
    covered_fraction,
)
from appliance.privacy.masking_eval import load_models
from appliance.privacy.redaction import RELEASE_MARGIN
from appliance.sources.frame_metadata import MetadataValue, encode_frame_metadata
from appliance.sources.synthetic import SyntheticYardCamera
from sync.linkemu import LinkConditions, LinkEmulator
from yardlink.localstack import (
    ApplianceProcess,
    IngestProcess,
    StackError,
    find_in_clear,
    lake_rows,
    write_site_toml,
)

REPO = Path(__file__).resolve().parents[1]
DEVICE, SITE, CAMERA = "gate-01", "depot-north", "gate-in"
TECHNICIAN_TOKEN = make_token()  # fresh per run: the appliance refuses placeholders
LINK = LinkConditions(rtt_s=0.150, rate_bps=2_000_000)
FLAP = (4.0, 8.0)  # offline s, online s
FRAMES_PER_S = 2.0


def say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Pushed:
    """What the camera sent: frame bytes by sha256 and the ground truth of each."""

    by_sha: dict[str, Any] = field(default_factory=dict)  # sha256 -> SyntheticFrame
    metadata: dict[str, str] = field(default_factory=dict)  # sha256 -> frame_metadata column
    accepted: int = 0
    refused: int = 0

    def plates(self) -> set[str]:
        return {t.value for f in self.by_sha.values() for t in f.truths if t.kind == "plate"}


def site_config(work: Path, cloud_url: str, token: str) -> Path:
    return write_site_toml(
        work / "appliance" / "site.toml",
        {
            "version": 1,
            "site": {
                "device_id": DEVICE,
                "site_id": SITE,
                "data_dir": str(work / "appliance" / "var"),
            },
            "outbox": {"path": str(work / "appliance" / "var" / "outbox")},
            "sync": {"cloud_url": cloud_url, "token": token},
            "local_api": {"host": "127.0.0.1", "port": 0, "technician_token": TECHNICIAN_TOKEN},
            "sources": {"queue_bound": 16, "cameras": [{"id": CAMERA}]},
            "telemetry": {"interval_s": 10},
            "sampling": {"every_n_frames": 15, "max_per_hour": 600},
            "models_dir": str(REPO / "models"),
        },
    )


async def camera_loop(appliance: ApplianceProcess, pushed: Pushed, stop: asyncio.Event) -> None:
    camera = SyntheticYardCamera(seed=7)
    index = 0
    while not stop.is_set():
        frame = await asyncio.to_thread(camera.frame, index)
        jpeg = await asyncio.to_thread(frame.encode)
        gate: dict[str, MetadataValue] = {"lane": 1 + index % 4, "transaction_id": f"T-{index:05d}"}
        index += 1
        try:
            await asyncio.to_thread(appliance.push_frame, CAMERA, jpeg, gate)
            sha = hashlib.sha256(jpeg).hexdigest()
            pushed.by_sha[sha] = frame
            pushed.metadata[sha] = encode_frame_metadata(gate) or ""
            pushed.accepted += 1
        except StackError:
            pushed.refused += 1  # the appliance is down (killed, restarting)
        await asyncio.sleep(1.0 / FRAMES_PER_S)


def progress_line(t: float, appliance: ApplianceProcess, cloud: IngestProcess) -> str:
    lake = len(lake_rows(cloud.data_dir)) if cloud.data_dir.exists() else 0
    blobs = sum(1 for p in (cloud.data_dir / "blobs").rglob("*") if p.is_file())
    try:
        status = appliance.get("/v1/status")
    except StackError:
        return f"t={t:5.1f}s  appliance down          | cloud: {lake} events, {blobs} blobs"
    classes = status["outbox"]["classes"]
    sync = status["sync"] or {}
    ocr = status["tasks"].get("gate_ocr", {}).get("latency_ms", {})
    return (
        f"t={t:5.1f}s  frames {sum(status['frames'].values()):4d}  "
        f"gate_ocr p99 {ocr.get('p99') or 0:6.1f} ms  "
        f"outbox events {classes['events']['records']:4d} "
        f"raw {classes['raw_sampled']['records']:2d}+{classes['raw_requested']['records']}  "
        f"link {sync.get('link', '?'):8s}"
        f"| cloud: {lake} events, {blobs} blobs"
    )


async def wait_drained(appliance: ApplianceProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await asyncio.to_thread(appliance.post, "/v1/sync/now")
            classes = (await asyncio.to_thread(appliance.get, "/v1/status"))["outbox"]["classes"]
            if all(classes[c]["records"] == 0 for c in ("events", "raw_requested", "raw_sampled")):
                return True
        except StackError:
            pass
        await asyncio.sleep(1.0)
    return False


async def run(seconds: float, work: Path) -> int:
    await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)
    cloud = IngestProcess(work / "cloud")
    token = cloud.add_device(DEVICE, SITE)
    operator = cloud.add_operator("ops")
    cloud.start()
    appliance = ApplianceProcess(work / "appliance" / "site.toml", TECHNICIAN_TOKEN)
    try:
        return await run_stack(seconds, work, cloud, appliance, operator, token)
    finally:  # an error or Ctrl-C must not leave processes behind
        appliance.kill()
        cloud.kill()


async def run_stack(
    seconds: float,
    work: Path,
    cloud: IngestProcess,
    appliance: ApplianceProcess,
    operator: str,
    token: str,
) -> int:
    say(f"[cloud] yardlink ingest serve on {cloud.url}, data in {cloud.data_dir}")
    say(f"[cloud] device {DEVICE} at site {SITE} registered (token issued once)")
    pushed, stop = Pushed(), asyncio.Event()
    async with LinkEmulator(("127.0.0.1", cloud.port), LINK) as link:
        link.start_flapping(*FLAP)
        say(
            f"[link]  emulator {link.url}: 2 Mbit/s, 150 ms round trip, "
            f"down {FLAP[0]:.0f} s every {sum(FLAP):.0f} s"
        )
        site_config(work, link.url, token)
        say("[yard]  appliance starting (loading PP-OCR and face detection models)")
        await asyncio.to_thread(appliance.start)
        say(f"[yard]  appliance ready, local API {appliance.api_url}; camera {CAMERA} pushing")
        camera = asyncio.create_task(camera_loop(appliance, pushed, stop))
        started, request_id = time.monotonic(), ""
        faults = {seconds * 0.35: "appliance", seconds * 0.6: "cloud"}
        while (t := time.monotonic() - started) < seconds:
            await asyncio.sleep(3.0)
            say(await asyncio.to_thread(progress_line, t, appliance, cloud))
            for at, victim in list(faults.items()):
                if t >= at:
                    del faults[at]
                    target = appliance if victim == "appliance" else cloud
                    say(f"[fault] kill -9 the {victim}; restarting it")
                    target.kill()
                    await asyncio.to_thread(target.start)
                    say(f"[fault] {victim} back up")
            if not request_id and (rows := lake_rows(cloud.data_dir)):
                seq = int(rows[0]["seq"])
                request_id = cloud.request_raw(operator, DEVICE, seq)["request_id"]
                say(f"[ops]   operator asks for the raw frame of event seq {seq}: {request_id}")
        stop.set()
        await camera
        await link.stop_flapping()
        say("[yard]  camera stopped; link steady; waiting for the outbox to drain")
        drained = await wait_drained(appliance, timeout=180)
        while request_id and cloud.raw_request(operator, request_id)["state"] == "requested":
            await asyncio.to_thread(appliance.post, "/v1/sync/now")  # delivery is confirmed
            await asyncio.sleep(1.0)  # at the next handshake
        status = await asyncio.to_thread(appliance.get, "/v1/status")
        appliance.stop()
    state = cloud.raw_request(operator, request_id)["state"] if request_id else "not made"
    cloud.stop()
    kills = appliance.kills + cloud.kills
    return report(work, cloud, pushed, status, drained, state, kills)


def blob_frames(work: Path, rows: list[dict[str, Any]], pushed: Pushed) -> dict[str, Any]:
    """Each blob's original frame (its truths), by the appliance's index of blurred copies
    (event seq -> blob) and the lake (event seq -> the pushed frame's sha256)."""
    original = {int(row["seq"]): row["raw_sha256"] for row in rows}
    index = work / "appliance" / "var" / "raw-index.jsonl"
    frames: dict[str, Any] = {}
    for line in index.read_text(encoding="utf-8").splitlines() if index.exists() else []:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            frames[entry["sha256"]] = pushed.by_sha.get(original.get(int(entry["seq"]), ""))
    return frames


def pixel_check(blobs: list[Path], frames: dict[str, Any], pushed: Pushed) -> dict[str, Any]:
    """The independent check (not the pass that decided what to blur) over every blob, and
    the real faces of each blob's frame: hidden if their pixels hold no face's detail."""
    import cv2
    import numpy as np

    models = load_models(REPO / "models")
    faces: list[str] = []
    plates: list[str] = []
    in_blobs = hidden = 0
    try:
        for path in blobs:
            image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                faces.append(f"{path.name}: not an image, cannot be checked")
                continue
            frame = frames.get(path.name)  # None: not a blurred copy the appliance indexed
            for x, y, w, h in (truth.box for truth in frame.faces) if frame is not None else ():
                in_blobs += 1
                hidden += box_detail(image, (x, y, w, h)) < MIN_FACE_DETAIL
            for detector, boxes in models.check.faces_found_by(image).items():
                faces += [f"{path.name}: face ({detector}) at {box}" for box in boxes]
            read = models.check.plates_read(image, pushed.plates())
            plates += [f"{path.name}: plate {plate}" for plate in read]
    finally:
        models.close()
    return {"faces": faces, "plates": plates, "in_blobs": in_blobs, "hidden": hidden}


def faces_found(rows: list[dict[str, Any]], pushed: Pushed) -> tuple[int, int]:
    """(real faces in the frames that reached the cloud, those face_anonymize found)."""
    total = found = 0
    for row in rows:
        if row["task"] != "face_anonymize":
            continue
        boxes = [
            (x0, y0, x1 - x0, y1 - y0)
            for x0, y0, x1, y1 in (r["box"] for r in row["results"] if r["kind"] == "face")
        ]
        for truth in pushed.by_sha[row["raw_sha256"]].faces:
            total += 1
            found += covered_fraction(truth.box, boxes, margin=RELEASE_MARGIN) >= MASKED_COVERAGE
    return total, found


def report(
    work: Path,
    cloud: IngestProcess,
    pushed: Pushed,
    status: dict[str, Any],
    drained: bool,
    raw_request_state: str,
    kills: int,
) -> int:
    rows = lake_rows(cloud.data_dir)
    seqs = Counter(int(row["seq"]) for row in rows)
    duplicates = sum(n - 1 for n in seqs.values())
    foreign = [r for r in rows if r["raw_sha256"] not in pushed.by_sha]
    untagged = [r for r in rows if r["frame_metadata"] != pushed.metadata.get(r["raw_sha256"])]
    read, codes = 0, 0
    for row in rows:
        if row["task"] != "gate_ocr":
            continue
        truth = {t.value for t in pushed.by_sha[row["raw_sha256"]].truths}
        codes += 1
        read += any(r["kind"] == "container_code" and r["value"] in truth for r in row["results"])
    blobs = [p for p in (cloud.data_dir / "blobs").rglob("*") if p.is_file()]
    bad_blobs = [p for p in blobs if hashlib.sha256(p.read_bytes()).hexdigest() != p.name]
    leaks = find_in_clear(cloud.data_dir, pushed.plates())
    pixels = pixel_check(blobs, blob_frames(work, rows, pushed), pushed)
    faces_in_frames, faces_detected = faces_found(rows, pushed)
    ocr = status["tasks"]["gate_ocr"]
    checks = {
        "outbox drained (events, raw) after the link came back": drained,
        f"events in the lake: {len(rows)}, each exactly once": duplicates == 0 and len(rows) > 0,
        "every lake event comes from a frame the camera pushed": not foreign,
        "every lake event carries its frame's X-Frame-Metadata (lane, transaction)": not untagged,
        f"raw blobs in the cloud: {len(blobs)}, sha256 verified": not bad_blobs and len(blobs) > 0,
        f"operator's raw request: {raw_request_state}": raw_request_state == "delivered",
        f"plates in clear in the cloud ({len(pushed.plates())} plates looked for)": not leaks,
        f"independent check of the {len(blobs)} blobs: plates read {len(pixels['plates'])}": (
            not pixels["plates"]
        ),
        f"real faces in the blobs: {pixels['in_blobs']}, {pixels['hidden']} filled": (
            pixels["in_blobs"] > 0 and pixels["hidden"] == pixels["in_blobs"]
        ),
        f"independent check of the {len(blobs)} blobs: faces found {len(pixels['faces'])}": (
            not pixels["faces"]
        ),
    }
    say("")
    say(f"== yardlink demo: what the cloud holds ({kills} processes killed with SIGKILL)")
    in_lake = len({row["raw_sha256"] for row in rows})
    say(
        f"   frames pushed: {pushed.accepted} accepted (201: in the spool, fsync'd),"
        f" {pushed.refused} refused while down; {in_lake} reached the cloud"
    )
    say(
        f"   real faces in the frames that reached the cloud: {faces_in_frames},"
        f" found by face_anonymize: {faces_detected}; every blob in the cloud looked at again"
        f" (BlazeFace at {INDEPENDENT_FACE_MIN_SCORE}, dlib's HOG face detector,"
        " a second permissive OCR reader)"
    )
    say(f"   container codes read correctly: {read} of {codes} gate_ocr events")
    say(
        f"   gate_ocr latency frame-to-durable p50/p99: {ocr['latency_ms']['p50']}/"
        f"{ocr['latency_ms']['p99']} ms (SLA p99 {ocr['sla_p99_ms']} ms), since the restart"
    )
    for label, ok in checks.items():
        say(f"   [{'ok' if ok else 'FAIL'}] {label}")
    for leak in [*leaks, *pixels["plates"], *pixels["faces"]][:8]:
        say(f"          leak: {leak}")
    say(f"   logs: {work / 'logs'}, {work / 'appliance' / 'logs'}")
    if not all(checks.values()):
        failed = [label for label, ok in checks.items() if not ok]
        say(f"demo FAILED: {len(failed)} check(s) did not hold: {'; '.join(failed)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yardlink-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the camera runs")
    parser.add_argument("--work-dir", type=Path, default=REPO / "var" / "demo")
    args = parser.parse_args(argv)
    if not (REPO / "models" / ".verified").exists():
        say("models are missing: run `make models` (or `make demo`, which fetches them)")
        return 2
    try:
        return asyncio.run(run(args.seconds, args.work_dir))
    except StackError as error:
        say(f"demo failed: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
