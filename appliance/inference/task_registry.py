"""Inference tasks as plugins, as the runtimes are (``appliance.inference.runtimes``).

Each task registers one :class:`TaskPlugin`: its name (the ``task`` of its events
records), where its settings come from, a loader, the model files it needs and
what it finds that must be hidden before a frame leaves the site.  The daemon,
the pipeline and the redaction read only the registry, so a new task (a
vehicle-type classifier, say) is one module that calls ``register_task`` and is
imported by ``appliance.inference.tasks``; no daemon or privacy code changes.

``TaskRegistry.load`` never raises for a task that cannot be loaded: a missing
runtime library (``RuntimeUnavailable``), a missing or mismatching model file, or
a model the runtime rejects (``ModelLoadError``) puts the task's name and a
one-line reason into the failures and leaves it out of the loaded tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from appliance.errors import ModelLoadError, RuntimeUnavailable
from appliance.inference.model_files import ModelFileError
from appliance.inference.results import InferenceTask
from appliance.inference.settings import InferenceSettings
from appliance.privacy.redaction import RedactionPolicy

__all__ = ["TASKS", "LoadedTasks", "TaskPlugin", "TaskRegistry", "TaskSettings", "register_task"]

LoadedTasks = tuple[dict[str, InferenceTask], dict[str, str]]  # (loaded, name -> why not)


class TaskSettings(Protocol):
    """What the daemon reads of every task's settings section."""

    @property
    def enabled(self) -> bool: ...

    @property
    def sla_p99_ms(self) -> float: ...


S = TypeVar("S", bound=TaskSettings)


@dataclass(frozen=True, slots=True)
class TaskPlugin(Generic[S]):
    """One registered task."""

    name: str
    settings: Callable[[InferenceSettings], S]  # its section of ``[inference]`` (or defaults)
    load: Callable[[S, Path], InferenceTask]  # (settings, models_dir) -> warmed-up task
    model_files: tuple[str, ...] = ()  # file names under models_dir it loads
    hides: frozenset[str] = field(default_factory=frozenset)  # detection kinds to blur
    gates_release: bool = False  # no frame leaves before this task ran on it (faces)


class TaskRegistry:
    """Task plugins by name, in registration order (the order tasks start on a frame)."""

    def __init__(self, plugins: Iterator[TaskPlugin[Any]] | tuple[TaskPlugin[Any], ...] = ()):
        self._plugins: dict[str, TaskPlugin[Any]] = {}
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: TaskPlugin[Any]) -> TaskPlugin[Any]:
        if plugin.name in self._plugins:
            raise ValueError(f"an inference task named {plugin.name!r} is already registered")
        self._plugins[plugin.name] = plugin
        return plugin

    def copy(self) -> TaskRegistry:
        """A registry with the same plugins, to add to without changing this one."""
        return TaskRegistry(tuple(self._plugins.values()))

    def __iter__(self) -> Iterator[TaskPlugin[Any]]:
        return iter(self._plugins.values())

    def get(self, name: str) -> TaskPlugin[Any] | None:
        return self._plugins.get(name)

    def enabled(self, inference: InferenceSettings) -> list[TaskPlugin[Any]]:
        return [plugin for plugin in self if plugin.settings(inference).enabled]

    def load(self, inference: InferenceSettings, models_dir: Path) -> LoadedTasks:
        """Load every enabled task: ``({name: task}, {name: why it is not loaded})``."""
        tasks: dict[str, InferenceTask] = {}
        failures: dict[str, str] = {}
        for plugin in self.enabled(inference):
            outcome = _load_one(plugin, plugin.settings(inference), models_dir)
            if isinstance(outcome, str):
                failures[plugin.name] = outcome
            else:
                tasks[plugin.name] = outcome
        return tasks, failures

    def slas_ms(self, inference: InferenceSettings) -> dict[str, float]:
        """Every registered task's p99 SLA (shown in ``/v1/status`` even when disabled)."""
        return {plugin.name: plugin.settings(inference).sla_p99_ms for plugin in self}

    def redaction_policy(self) -> RedactionPolicy:
        return RedactionPolicy(
            hides={plugin.name: plugin.hides for plugin in self if plugin.hides},
            gates=frozenset(plugin.name for plugin in self if plugin.gates_release),
        )

    def model_paths(self, name: str, models_dir: Path) -> list[Path]:
        """The files task ``name`` loads (absolute, for messages); [] if not registered."""
        plugin = self.get(name)
        return [] if plugin is None else [models_dir.absolute() / f for f in plugin.model_files]


def _load_one(plugin: TaskPlugin[Any], settings: Any, models_dir: Path) -> InferenceTask | str:
    try:
        return plugin.load(settings, models_dir)
    except RuntimeUnavailable as exc:
        return f"runtime unavailable, task skipped: {exc}"
    except ModelFileError as exc:
        return f"model file rejected: {exc}"
    except ModelLoadError as exc:
        return f"model failed to load: {exc}"


TASKS = TaskRegistry()  # the product's tasks, registered by ``appliance.inference.tasks``


def register_task(plugin: TaskPlugin[S]) -> TaskPlugin[S]:
    """Add a task to the product's registry under its name."""
    TASKS.register(plugin)
    return plugin
