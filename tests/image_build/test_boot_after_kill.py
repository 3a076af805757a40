"""A reboot after a kill at any point of the A/B switch starts a confirmed slot.

The switch (``image_build.switch``) is run for real against a root whose slots hold the
units of this checkout; every atomic write it makes (``os.replace``, ``os.unlink``) is
a point where a kill or a power cut can land, so the root is copied after each one.
Each copy is then booted as systemd would: the real generator is run into an output
directory, and when it wants ``yardlink-settle.service`` the settle runs (in
process; one test runs the unit's own ``ExecStart``).  Every boot must start the slot
the state records as confirmed, with ``current`` on it and no trial left open.  The
systemd run of the same is in ``test_systemd_switch.py`` (slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from image_build.build import UNIT_FILES, keyring_envelope, unit_template
from image_build.errors import InstallReverted
from image_build.layout import ImageState, Layout
from image_build.service import HandOver, UnitCommand
from image_build.switch import Release, settle_root, switch_slot
from image_build.units import write_units
from sync.shared.signing import Keyring, SigningKey
from tests.appliance.config_harness import yardlink_cli

# the generator of the releases before this rule: it followed `current` alone
FOLLOWS_CURRENT = b"""#!/bin/sh
set -eu
target=$(readlink "@PREFIX@/opt/yardlink/current" 2>/dev/null) || exit 0
slot=${target##*/}
case "$slot" in a | b) ;; *) exit 0 ;; esac
wants="$1/multi-user.target.wants"
mkdir -p "$wants"
ln -sf "@PREFIX@/etc/systemd/system/yardlink@.service" "$wants/yardlink@$slot.service"
"""


class ScriptedService:
    """The service manager's answers (systemd's side is ``test_systemd_units``)."""

    def __init__(self, outcome: HandOver, layout: Layout | None = None) -> None:
        self.outcome = outcome
        self.layout = layout
        self.reloaded: list[bool] = []  # at each reload: was a trial open?

    def stop(self) -> None:
        pass

    def start_and_wait(self, deadline_s: float) -> tuple[bool, str]:
        return True, ""

    def hand_over(self, deadline_s: float) -> HandOver:
        return self.outcome

    def settle_instances(self, deadline_s: float) -> list[str]:
        return []

    def reload_units(self) -> None:
        assert self.layout is not None
        self.reloaded.append(ImageState.load(self.layout.state_file).trial is not None)


def _slot(layout: Layout, name: str, *, before_the_rule: bool = False) -> None:
    units = layout.slot(name) / "systemd"
    units.mkdir(parents=True)
    for unit in UNIT_FILES:  # each slot's own bytes, so that every unit write happens
        (units / unit).write_bytes(unit_template(unit) + f"# slot {name}\n".encode())
    if before_the_rule:
        (units / "yardlink-slot-generator").write_bytes(FOLLOWS_CURRENT)
    command = layout.slot(name) / "venv" / "bin" / "yardlink"  # the slot's CLI: this checkout
    command.parent.mkdir(parents=True)
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m yardlink.cli "$@"\n')
    command.chmod(0o755)
    (layout.slot(name) / ".complete").write_text(name)


@pytest.fixture
def gateway(tmp_path: Path) -> Layout:
    """Slot a installed and confirmed (release 1), slot b filled with release 2."""
    layout = Layout(tmp_path / "root")
    _slot(layout, "a")
    _slot(layout, "b")
    write_units(layout, "a")
    layout.switch_to("a")
    ImageState(active="a", counter=1, version="1").save(layout.state_file)
    return layout


class CrashImages:
    """Copies of the root: before the first write, then after each atomic write."""

    def __init__(self, layout: Layout, store: Path) -> None:
        self.layout = layout
        self.store = store
        self.images: list[Path] = []

    def take(self) -> None:
        image = self.store / f"{len(self.images):03d}"
        shutil.copytree(self.layout.root, image, symlinks=True)
        self.images.append(image)

    def restore(self, image: Path) -> None:
        """The root as the kill left it (the generator's paths are the root's own)."""
        shutil.rmtree(self.layout.root)
        shutil.copytree(image, self.layout.root, symlinks=True)


def _record(
    monkeypatch: pytest.MonkeyPatch, layout: Layout, store: Path, run: Callable[[], object]
) -> list[Path]:
    crash = CrashImages(layout, store)
    crash.take()
    real_replace, real_unlink = os.replace, os.unlink

    def replace(source: object, target: object, **kwargs: object) -> None:
        real_replace(source, target, **kwargs)  # type: ignore[arg-type]
        crash.take()

    def unlink(path: object, **kwargs: object) -> None:
        real_unlink(path, **kwargs)  # type: ignore[arg-type]
        crash.take()

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        patch.setattr(os, "unlink", unlink)
        run()
    return crash.images


@dataclass(frozen=True)
class Boot:
    appliances: list[str]  # the yardlink@ instances multi-user.target wants
    settled: bool  # yardlink-settle.service was wanted (and ran before them)
    current: str | None
    state: ImageState


def _boot(layout: Layout, out: Path) -> Boot:
    """What a boot of the root does: the generator, then the settle unit if wanted."""
    subprocess.run([str(layout.generator_file), str(out)], check=True, timeout=30)
    wants = out / "multi-user.target.wants"
    names = sorted(p.name for p in wants.glob("*")) if wants.exists() else []
    appliances = [name for name in names if name.startswith("yardlink@")]
    settles = "yardlink-settle.service" in names
    if settles:  # the booted slot's own settle, ordered before its appliance
        assert len(appliances) == 1
        slot = appliances[0].removeprefix("yardlink@")[0]
        assert _settle_command(out) == _settle_argv(layout, slot)
        settle_root(layout, None, 5.0)
    state = ImageState.load(layout.state_file)
    return Boot(appliances, settles, layout.current_slot(), state)


def _settle_command(out: Path) -> list[str]:
    unit = (out / "yardlink-settle.service").read_text()
    assert "Before=yardlink@a.service yardlink@b.service" in unit.splitlines()
    return UnitCommand.parse(out / "yardlink-settle.service").argv


def _settle_argv(layout: Layout, slot: str) -> list[str]:
    """What the settle unit runs: the booted slot's own CLI, never the trial's."""
    command = str(layout.slot(slot) / "venv" / "bin" / "yardlink")
    return [command, "image", "settle", "--root", f"{layout.root}/", "--service", "none"]


def _boots_a_confirmed_slot(layout: Layout, images: list[Path], work: Path) -> list[str]:
    """Boot each image twice; the slot each first boot started."""
    crash = CrashImages(layout, work)
    started = []
    for number, image in enumerate(images):
        crash.restore(image)
        at_kill = ImageState.load(layout.state_file)
        boot = _boot(layout, work / f"boot-{number}")
        link = os.readlink(image / "opt" / "yardlink" / "current")
        where = f"killed after write {number}: {at_kill}, current -> {link}"
        assert boot.appliances == [f"yardlink@{boot.state.active}.service"], where
        assert boot.current == boot.state.active and boot.state.trial is None, where
        assert boot.settled == (at_kill.trial is not None), where
        again = _boot(layout, work / f"again-{number}")
        assert again.appliances == boot.appliances and not again.settled, where
        started.append(boot.state.active or "")
    return started


def _trial_on_b(image: Path) -> bool:
    """The kill of the bug: `current` already on the new slot, not yet confirmed."""
    state = ImageState.load(image / "opt" / "yardlink" / "image-state.json")
    return state.trial is not None and os.readlink(image / "opt/yardlink/current") == "slots/b"


SWITCHES = {
    "confirmed healthy": (HandOver(True), None, "b"),
    "refused before standby": (HandOver(False, "ended", old_serving=True), InstallReverted, "a"),
    "unhealthy after taking over": (HandOver(False, "not ready"), InstallReverted, "a"),
}


def _switch_to_b(layout: Layout, outcome: HandOver, raises: type[Exception] | None) -> None:
    state = ImageState.load(layout.state_file)
    service = ScriptedService(outcome, layout)
    if raises is None:
        switch_slot(layout, "b", "a", Release("2", 2), state, service, 5.0)
    else:
        with pytest.raises(raises):
            switch_slot(layout, "b", "a", Release("2", 2), state, service, 5.0)
    assert service.reloaded == [False]  # systemd shows the next boot's choice: trial over


@pytest.mark.parametrize("b_before_the_rule", [False, True], ids=["b-now", "b-older-rollback"])
@pytest.mark.parametrize("switch", list(SWITCHES))
def test_a_reboot_after_a_kill_anywhere_in_the_switch_starts_a_confirmed_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str, b_before_the_rule: bool
) -> None:
    layout = Layout(tmp_path / "root")
    _slot(layout, "a")
    _slot(layout, "b", before_the_rule=b_before_the_rule)  # a rollback to an older release
    write_units(layout, "a")
    layout.switch_to("a")
    ImageState(active="a", counter=1, version="1").save(layout.state_file)
    outcome, raises, kept = SWITCHES[switch]
    images = _record(
        monkeypatch, layout, tmp_path / "images", lambda: _switch_to_b(layout, outcome, raises)
    )
    assert any(_trial_on_b(image) for image in images)  # the kill point of the bug is in
    assert len(images) >= 6  # trial, units, `current`, then confirmed or back: 3 writes
    started = _boots_a_confirmed_slot(layout, images, tmp_path / "boots")
    assert started[-1] == kept  # after the switch ran to its end
    assert set(started) == {"a", kept}  # a until confirmed, then the kept one only


def _restore_an_open_trial(
    gateway: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's root as a kill left it while slot b was on trial."""
    images = _record(
        monkeypatch,
        gateway,
        tmp_path / "switch",
        lambda: _switch_to_b(gateway, HandOver(True), None),
    )
    CrashImages(gateway, tmp_path / "work").restore(
        next(image for image in images if _trial_on_b(image))
    )


def test_a_reboot_during_the_settle_of_a_trial_starts_the_confirmed_slot(
    gateway: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _restore_an_open_trial(gateway, tmp_path, monkeypatch)
    settling = _record(
        monkeypatch, gateway, tmp_path / "settle", lambda: settle_root(gateway, None, 5.0)
    )
    assert len(settling) >= 3  # units, `current`, state: a kill between any two
    assert set(_boots_a_confirmed_slot(gateway, settling, tmp_path / "boots")) == {"a"}


def test_the_settle_unit_runs_the_booted_slots_settle_and_says_what_it_did(
    gateway: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _restore_an_open_trial(gateway, tmp_path, monkeypatch)
    subprocess.run([str(gateway.generator_file), str(tmp_path / "boot")], check=True)
    wants = tmp_path / "boot" / "multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == [
        "yardlink-settle.service",
        "yardlink@a.service",
    ]
    command = UnitCommand.parse(tmp_path / "boot" / "yardlink-settle.service")
    assert command.argv == _settle_argv(gateway, "a")
    settled = subprocess.run(command.argv, capture_output=True, text=True, timeout=120, check=False)
    assert settled.returncode == 0, settled.stderr
    assert settled.stderr == (
        "settled: slot b was on trial when an install stopped before confirming it:"
        " switched back to slot a, the last one confirmed\n"
    )
    assert settled.stdout == "current slot: a (active a)\n"
    again = subprocess.run(command.argv, capture_output=True, text=True, timeout=120, check=False)
    assert (again.returncode, again.stderr, again.stdout) == (0, "", settled.stdout)


def test_settle_and_install_errors_are_one_line_and_a_refused_bundle_leaves_no_trace(
    gateway: Layout, tmp_path: Path, keyring: Keyring, release_key: SigningKey
) -> None:
    gateway.state_file.write_text("{")
    broken = yardlink_cli("image", "settle", "--root", str(gateway.root), "--service", "none")
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert broken.stderr.startswith(f"error: cannot read {gateway.state_file}: ")
    assert broken.stderr.count("\n") == 1
    fresh = tmp_path / "fresh"
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not a bundle")
    trust = tmp_path / "keyring.json"
    trust.write_bytes(keyring_envelope(keyring, release_key))
    refused = yardlink_cli(
        "image", "install", str(junk), "--root", str(fresh), "--trust", str(trust),
        "--service", "none", "--device-id", "gate-07",
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: bundle refused (corrupt): ")
    assert refused.stderr.count("\n") == 1
    assert not fresh.exists()  # not even the install lock


def test_a_killed_first_install_has_no_confirmed_slot_and_boots_the_only_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path / "root")
    _slot(layout, "b")
    images = _record(
        monkeypatch,
        layout,
        tmp_path / "images",
        lambda: switch_slot(
            layout,
            "b",
            None,
            Release("1", 1),
            ImageState(),
            ScriptedService(HandOver(True), layout),
            5.0,
        ),
    )
    crash = CrashImages(layout, tmp_path / "work")
    for number, image in enumerate(images):
        crash.restore(image)
        if layout.current_slot() is None:
            continue  # killed before the first switch: nothing to boot yet
        boot = _boot(layout, tmp_path / f"boot-{number}")
        assert boot.appliances == ["yardlink@b.service"] and boot.current == "b"
        assert boot.state.trial is None
