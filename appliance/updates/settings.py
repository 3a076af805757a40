"""The ``[updates]`` section of ``site.toml``: model OTA on this appliance.

[updates]
keyring_file = "/etc/yardlink/release-keyring.json"   # shipped in the image
device_class = "x86-cpu"
shadow_frames = 50
health_watch_s = 3600
"""

from __future__ import annotations

from pydantic import Field

from sync.shared.config_section import ConfigSection

__all__ = ["UpdateSettings"]


class UpdateSettings(ConfigSection):
    keyring_file: str | None = Field(
        default=None, description="trusted release keyring (signed JSON); None = no model updates"
    )
    device_class: str = Field(
        default="x86-cpu",
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
        description="a release must name this class in its device_classes",
    )
    updates_dir: str | None = Field(
        default=None, description="slots, state and downloads; None = <data_dir>/updates"
    )
    golden_latency_runs: int = Field(
        default=3, ge=1, le=50, description="timed runs per golden case after the warm-up run"
    )
    shadow_frames: int = Field(
        default=50, ge=1, le=100_000, description="frames compared in the shadow window"
    )
    shadow_max_s: float = Field(
        default=900.0, gt=0, description="the window ends after this long even with fewer frames"
    )
    shadow_min_frames: int = Field(
        default=10, ge=1, description="fewer frames than this when the time is up: roll back"
    )
    shadow_max_backlog: int = Field(
        default=1,
        ge=0,
        description="the old model skips a frame while more frames than this wait in the"
        " camera queues (the serving model needs the CPU)",
    )
    shadow_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="the old model's re-runs get this much lower CPU priority (Linux thread"
        " niceness): when both want the CPU, the serving model gets it (0: same priority)",
    )
    shadow_max_error_rate: float = Field(
        default=0.02, ge=0, le=1, description="share of frames the new model may fail on"
    )
    shadow_p99_vs_sla: float = Field(
        default=1.0, gt=0, description="the new model's p99 must stay under this x the task SLA"
    )
    shadow_min_agreement: float = Field(
        default=0.8, ge=0, le=1, description="share of frames where old and new find the same"
    )
    shadow_max_confidence_drop: float = Field(
        default=0.1, ge=0, le=1, description="mean confidence may fall at most this much"
    )
    health_watch_s: float = Field(
        default=3600.0,
        ge=0,
        description="after a commit the task's live results are watched this long; a"
        " regression rolls back to the previous slot (0: no watch)",
    )
    health_block_frames: int = Field(
        default=50, ge=1, le=100_000, description="the watch judges blocks of this many frames"
    )
    health_bad_blocks: int = Field(
        default=2,
        ge=1,
        le=100,
        description="a regression is this many unhealthy blocks in a row (one spike on a busy"
        " gateway is not)",
    )
    health_max_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="share of a block's frames the task may fail on"
    )
    health_p99_vs_sla: float = Field(
        default=1.0, gt=0, description="a block's p99 inference time must stay under this x SLA"
    )
