"""``yardlink models``: release keys, packaging, signing and offline verification.

Runs on an operator's machine; the private key never leaves it (docs/OTA.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from appliance.inference.validation import add_validate_commands
from appliance.updates.errors import ReleaseError, ReleaseValidationFailed
from appliance.updates.package import build_release, sign_release, verify_release
from appliance.updates.wiring import load_keyring
from sync.protocol.releases import RolloutPlan
from sync.shared.durable_file import replace_durably
from sync.shared.signing import Envelope, Keyring, PublicKey, SigningKey, VerificationError

__all__ = ["register"]

_DAY_S = 86_400


def _plain_errors(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A missing or unreadable file is one ``error:`` line, not a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as exc:
            raise ReleaseError(f"{exc.filename or 'file'}: {exc.strerror or exc}") from None

    return run


def _keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    stem = key.public.keyid[:16]
    key.save(out / f"{stem}.key")
    replace_durably(out / f"{stem}.pub.json", json.dumps(key.public.to_json(), indent=2).encode())
    print(f"key id {key.public.keyid}")
    print(f"private key {out / f'{stem}.key'} (mode 0600: keep it offline)")
    print(f"public key {out / f'{stem}.pub.json'}")
    return 0


def _read_public(path: Path) -> PublicKey:
    try:
        return PublicKey.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot read public key {path}: {exc}") from exc


def _keyring(args: argparse.Namespace) -> int:
    base = load_keyring(args.base) if args.base else None
    keys = dict(base.keys) if base else {}
    for path in args.add:
        key = _read_public(path)
        keys[key.keyid] = key
    revoked = set(base.revoked if base else ()) | set(args.revoke)
    for keyid in revoked:
        keys.pop(keyid, None)
    if not keys:
        raise ReleaseError("a keyring needs at least one key that is not revoked")
    new = Keyring(
        version=(base.version + 1) if base else 1,
        keys=keys,
        revoked=frozenset(revoked),
        issued_at=int(time.time()),
    )
    envelope = Envelope.sign(new.signed_document(), [SigningKey.load(p) for p in args.sign_with])
    if base is not None:
        base.rotated(envelope)  # the rules a device applies: signed by old and new, no un-revoke
    else:
        Keyring.from_envelope(envelope)
    replace_durably(args.out, envelope.to_bytes())
    print(f"keyring v{new.version}: {len(keys)} key(s), {len(revoked)} revoked -> {args.out}")
    return 0


def _package(args: argparse.Namespace) -> int:
    if any("=" not in item for item in args.model or ()):
        raise ReleaseError("--model takes ROLE=FILE, e.g. --model rec=my_rec.onnx")
    model_files = dict(item.split("=", 1) for item in args.model) if args.model else None
    build = build_release(
        args.model_dir,
        name=args.name,
        version=args.version,
        task=args.task,
        device_classes=args.device_class,
        out=args.out,
        golden_frames=args.golden_frames,
        model_files=model_files,
        derived=not args.no_derived,
    )
    print(json.dumps({"archive": str(build.archive), **build.report}, indent=2))
    return 0


def _sign(args: argparse.Namespace) -> int:
    try:
        rollout = RolloutPlan(
            canary_sites=args.canary_site,
            stages=[int(s) for s in args.stages.split(",")],
            max_failure_pct=args.max_failure_pct,
            min_devices=args.min_devices,
            bake_s=args.bake_s,
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ReleaseError(f"bad rollout plan: {exc}") from None
    manifest, data = sign_release(
        args.archive,
        [SigningKey.load(p) for p in args.key],
        counter=args.counter,
        issued_at=int(time.time()),
        expires_in_s=int(args.expires_days * _DAY_S),
        rollout=rollout,
        rollback=args.rollback,
        notes=args.notes,
    )
    out: Path = args.out or args.archive.with_name(args.archive.name + ".manifest.json")
    replace_durably(out, data)
    print(f"signed {manifest.name} {manifest.version} counter {manifest.counter} -> {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        manifest = args.manifest.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read manifest {args.manifest}: {exc.strerror}") from None
    try:
        verified = verify_release(
            args.archive,
            manifest,
            load_keyring(args.keyring),
            device_class=args.device_class,
            active_counter=args.active_counter,
        )
    except (VerificationError, ReleaseValidationFailed) as exc:
        print(f"refused ({exc.check}): {exc}", file=sys.stderr)
        return 3
    m = verified.manifest
    print(f"ok: {m.name} {m.version} counter {m.counter}, signed by {verified.keyid[:16]}")
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = groups.add_parser("models", help="signed model releases (operator's machine)")
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    keygen = commands.add_parser("keygen", help="make an Ed25519 release key pair")
    keygen.add_argument("--out", type=Path, required=True, help="directory for the key files")
    keygen.set_defaults(handler=_plain_errors(_keygen))

    keyring = commands.add_parser("keyring", help="build or rotate the keyring devices trust")
    keyring.add_argument("--out", type=Path, required=True)
    keyring.add_argument("--base", type=Path, help="the keyring devices trust now (rotation)")
    keyring.add_argument("--add", type=Path, action="append", default=[], help="a .pub.json")
    keyring.add_argument("--revoke", action="append", default=[], help="a key id to revoke")
    keyring.add_argument(
        "--sign-with",
        type=Path,
        action="append",
        required=True,
        help="private key(s): one trusted now and one of the new ring when rotating",
    )
    keyring.set_defaults(handler=_plain_errors(_keyring))

    package = commands.add_parser("package", help="build a release archive with golden outputs")
    package.add_argument("model_dir", type=Path)
    package.add_argument("--name", required=True)
    package.add_argument("--version", required=True)
    package.add_argument("--task", default="gate_ocr", choices=["gate_ocr", "face_anonymize"])
    package.add_argument("--device-class", action="append", required=True)
    package.add_argument("--out", type=Path, required=True)
    package.add_argument("--golden-frames", type=int, default=3)
    package.add_argument("--model", action="append", help="ROLE=FILE in MODEL_DIR (det, rec, face)")
    package.add_argument(
        "--no-derived",
        action="store_true",
        help="leave out the INT8 and folded files 'make models' derived (the device then "
        "runs the plain files: not what 'models validate' measured)",
    )
    package.set_defaults(handler=_plain_errors(_package))

    sign = commands.add_parser("sign", help="write the signed manifest of a release archive")
    sign.add_argument("archive", type=Path)
    sign.add_argument("--key", type=Path, action="append", required=True)
    sign.add_argument("--counter", type=int, required=True, help="above every earlier release")
    sign.add_argument("--expires-days", type=float, default=30.0)
    sign.add_argument("--canary-site", action="append", default=[])
    sign.add_argument("--stages", default="10,50,100", help="percentages, ending at 100")
    sign.add_argument("--max-failure-pct", type=float, default=2.0)
    sign.add_argument("--min-devices", type=int, default=3)
    sign.add_argument("--bake-s", type=int, default=3600)
    sign.add_argument("--rollback", action="store_true", help="a deliberate signed rollback")
    sign.add_argument("--notes", default="")
    sign.add_argument("--out", type=Path, help="default: ARCHIVE.manifest.json")
    sign.set_defaults(handler=_plain_errors(_sign))

    verify = commands.add_parser("verify", help="run every check a device runs")
    verify.add_argument("archive", type=Path)
    verify.add_argument("--manifest", type=Path, required=True)
    verify.add_argument("--keyring", type=Path, required=True)
    verify.add_argument("--device-class", required=True)
    verify.add_argument("--active-counter", type=int)
    verify.set_defaults(handler=_plain_errors(_verify))

    add_validate_commands(commands)  # validate, eval-set: appliance/inference/validation.py
