"""The A/B switch of an install, and settling one a kill left open (docs/IMAGE.md).

The rule: a trial (``ImageState.trial``, recorded before ``current`` moves) is open
until the new slot is confirmed healthy, and while it is open the slot to boot is the
trial's ``previous`` (the last one confirmed), whatever ``current`` says.  The boot
generator reads the same state file and boots that slot; ``settle`` (the next install,
``yardlink image settle``, or ``yardlink-settle.service`` at such a boot) puts
``current`` back on it.  Every write is one atomic rename, so a kill between any two
leaves a root whose next boot starts a confirmed slot (``tests/image_build/
test_boot_after_kill.py`` boots each one).
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace

from image_build.errors import InstallError, InstallReverted
from image_build.layout import SLOTS, ImageState, Layout
from image_build.service import HandOver, ServiceManager
from image_build.units import write_units

__all__ = [
    "InstallResult",
    "Release",
    "install_lock",
    "settle",
    "settle_instances",
    "settle_root",
    "switch_slot",
]


@dataclass(frozen=True)
class Release:
    version: str
    counter: int  # the signed release counter (rollback protection)


@dataclass(frozen=True)
class InstallResult:
    slot: str
    previous: str | None
    version: str
    counter: int
    healthy: bool  # False only when no service was started (``service=None``)
    # what a switch a killed install left open was found to be, and what was done about it
    settled: tuple[str, ...] = ()


@contextlib.contextmanager
def install_lock(layout: Layout) -> Iterator[None]:
    layout.base.mkdir(parents=True, exist_ok=True)
    with (layout.base / ".install.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError("another install is running on this root") from None
        yield


def settle(layout: Layout, state: ImageState) -> tuple[ImageState, list[str]]:
    """Close a trial that a killed installer left unconfirmed: back to its previous slot
    (its units, then ``current``, then the state: a kill meanwhile leaves the trial open
    for the next settle).  The state after, and what was done, for the operator."""
    if state.trial is None:
        return state, []
    trial_slot = state.trial.get("slot") or "?"
    previous = state.trial.get("previous")
    left = f"slot {trial_slot} was on trial when an install stopped before confirming it"
    if previous in SLOTS and layout.complete(previous):
        write_units(layout, previous)
        if layout.current_slot() != previous:
            layout.switch_to(previous)
            note = f"{left}: switched back to slot {previous}, the last one confirmed"
        else:
            note = f"{left}: slot {previous}, the last one confirmed, was already current"
    else:
        note = f"{left}, and no slot was confirmed before it: slot {layout.current_slot()} stays"
    settled = replace(state, trial=None)
    settled.save(layout.state_file)
    return settled, [note]


def settle_instances(service: ServiceManager | None, deadline_s: float) -> list[str]:
    """``ServiceManager.settle_instances``, after ``settle``; a service manager that
    cannot be asked (systemctl absent) is said so, for the hand-over to fail on."""
    if service is None:
        return []
    try:
        return service.settle_instances(deadline_s)
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"cannot check for a switch left open: {exc}"]


def settle_root(
    layout: Layout, service: ServiceManager | None, deadline_s: float
) -> tuple[ImageState, list[str]]:
    """``yardlink image settle``: what a killed install left, reverted and stopped, under
    the install lock (an install under way is not disturbed: it is refused)."""
    with install_lock(layout):
        state, notes = settle(layout, ImageState.load(layout.state_file))
        return state, notes + settle_instances(service, deadline_s)


def _try_start(service: ServiceManager, deadline_s: float) -> tuple[bool, str]:
    """A start that raises (an executable missing, systemctl absent) is an unhealthy
    start: the switch must still go back, not leave a stopped service on a bad slot."""
    try:
        return service.start_and_wait(deadline_s)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot start it: {exc}"


def _try_hand_over(service: ServiceManager, deadline_s: float) -> HandOver:
    """As ``_try_start``, for the switch from the running appliance to the new slot's."""
    try:
        return service.hand_over(deadline_s)
    except (OSError, subprocess.SubprocessError) as exc:
        return HandOver(False, f"cannot start it: {exc}")


def _try_reload(service: ServiceManager) -> None:
    """After the switch's last write: a reload that fails changes nothing on disk (the
    next boot runs the generator afresh), so it does not fail a finished switch."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        service.reload_units()


def switch_slot(
    layout: Layout,
    slot: str,
    previous: str | None,
    release: Release,
    state: ImageState,
    service: ServiceManager | None,
    deadline_s: float,
) -> InstallResult:
    """Point ``current`` at the complete ``slot`` and keep it only if its appliance is
    healthy within the deadline (the trial), else point back to ``previous``."""
    confirmed = replace(
        state, active=slot, counter=release.counter, version=release.version, trial=None
    )
    done = InstallResult(slot, previous, release.version, release.counter, service is not None)
    if service is None:  # no service to ask (an image being prepared): switch only
        write_units(layout, slot)
        layout.switch_to(slot)
        confirmed.save(layout.state_file)
        return done
    known_good = previous if previous is not None and layout.complete(previous) else None
    trial = replace(state, trial={"slot": slot, "previous": previous or ""})
    trial.save(layout.state_file)  # from here until confirmed, a boot starts `previous`
    write_units(layout, slot, boot_from=known_good)
    layout.switch_to(slot)
    # the running appliance serves until the new one is warm (a standby start, where the
    # service manager can: ServiceManager.hand_over)
    outcome = _try_hand_over(service, deadline_s)
    if outcome.healthy:
        confirmed.save(layout.state_file)  # the commit point: a boot starts `slot` now
        write_units(layout, slot)  # and by its own generator
        _try_reload(service)
        return done
    if outcome.old_serving and previous is not None:  # the new one never took over
        write_units(layout, previous)
        layout.switch_to(previous)
        state.save(layout.state_file)
        _try_reload(service)
        raise InstallReverted(
            f"{release.version} in slot {slot} was not healthy ({outcome.why}); switched"
            f" back to slot {previous}, which kept serving throughout"
        )
    service.stop()
    if known_good is None:
        state.save(layout.state_file)
        raise InstallError(
            f"the new slot {slot} is not healthy ({outcome.why}) and no slot to go back to"
        )
    write_units(layout, known_good)
    layout.switch_to(known_good)
    back, why_back = _try_start(service, deadline_s)
    state.save(layout.state_file)  # trial over: the previous release and counter stay
    _try_reload(service)
    again = "serves again" if back else f"did not come back either ({why_back})"
    raise InstallReverted(
        f"{release.version} in slot {slot} was not healthy ({outcome.why}); switched back to"
        f" slot {known_good}, which {again}"
    )
