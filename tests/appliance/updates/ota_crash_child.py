"""Child process of the OTA crash tests: install a release, SIGKILL itself at a step.

    python -m tests.appliance.updates.ota_crash_child ROOT ARCHIVE MANIFEST KEYRING STEP

STEP is one of the agent's steps (``verified``, ``stage``, ``staged``,
``validated``, ``switch``, ``commit``) or ``none`` to run to the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.appliance.updates.agent_harness import keyring_from_json, make_agent
from tests.support.outbox import outbox_at


def _kill_at(step: str):  # type: ignore[no-untyped-def]
    def on_step(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_step


async def _main(root: Path, archive: Path, manifest: Path, keyring: Path, step: str) -> None:
    outbox = outbox_at(root)
    try:
        agent = make_agent(
            root, keyring_from_json(keyring.read_text()), outbox, on_step=_kill_at(step)
        )
        await agent.start()
        candidate = await agent.install(archive, manifest.read_bytes())
        await agent.switch(candidate)
        await agent.commit(candidate.manifest.task)
    finally:
        await outbox.close()
    print("done", flush=True)


if __name__ == "__main__":
    root, archive, manifest, keyring, step = sys.argv[1:6]
    asyncio.run(_main(Path(root), Path(archive), Path(manifest), Path(keyring), step))
