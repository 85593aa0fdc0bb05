"""The daemon's settings: defaults, then the config file, then command-line options.

The config file (`daemon.toml`, see `paths.py`) takes the same names as the options, e.g.

    delta = 0.3
    memory_mb = 256
    idle_exit_s = 600

and is re-read when it changes on disk; options given on the command line stay in force.
"""

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from vqedit.engine.mode import STICKY_DELTA, Mode


class SettingsError(ValueError):
    """The config file or an option is invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    model: str | None = None  # base model directory or cached name; None: all-MiniLM-L6-v2
    student: Path | None = None  # student file; None: the shipped student
    head: Path | None = None  # label head file; None: the shipped BBC topic head
    device: str = "auto"  # auto takes the GPU when there is one
    delta: float = STICKY_DELTA  # sticky hysteresis; 0 is exact mode. MODEL.md: the trade-off
    sweep: int = 2  # sticky refresh: tokens per layer re-quantized exactly per edit
    memory_mb: float = 1024.0  # LRU budget for segment states; ~37 KiB a token (shipped student)
    idle_unload_s: float = 600.0  # no work for this long: drop the model and states, keep texts
    idle_exit_s: float = 1800.0  # no client connected for this long: exit
    compact_after_s: float = 2.0  # no edit for this long: compact edited documents exactly
    threads: int = 1  # torch threads for the worker (0: torch's default); edits are many small
    # products, and two threads beside other busy processes ran them 7-13x slower than one
    tcp_port: int | None = None  # also listen on 127.0.0.1:PORT (token in tcp.json); 0 = any

    @property
    def mode(self) -> Mode:
        return Mode(delta=self.delta, sweep=self.sweep)

    @property
    def mode_name(self) -> str:
        return "exact" if self.delta == 0 else f"sticky δ={self.delta} sweep={self.sweep}"

    def model_key(self) -> tuple[Any, ...]:
        """What the loaded model depends on: a change here means reload and recompute."""
        return (self.model, self.student, self.head, self.device, self.delta, self.sweep)


def resolve(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Defaults, then the config file (if it exists), then `overrides` (options given)."""
    values: dict[str, Any] = {}
    if config is not None and config.is_file():
        try:
            values.update(tomllib.loads(config.read_text()))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SettingsError(f"{config}: {e}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise SettingsError(f"unknown settings {sorted(unknown)} (known: {sorted(known)})")
    try:
        settings = replace(Settings(), **{k: _convert(k, v) for k, v in values.items()})
        Mode(delta=settings.delta, sweep=settings.sweep)  # checks δ and sweep
    except (TypeError, ValueError) as e:
        raise SettingsError(f"invalid setting: {e}") from None
    if settings.device not in ("auto", "cpu", "cuda"):
        raise SettingsError(f"device must be auto, cpu or cuda, got {settings.device!r}")
    return settings


def _convert(name: str, value: Any) -> Any:
    if name in ("student", "head"):
        return Path(value).expanduser()
    if name in ("delta", "memory_mb", "idle_unload_s", "idle_exit_s", "compact_after_s"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")
        return float(value)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if name in ("sweep", "threads", "tcp_port") and not (integer and value >= 0):
        raise ValueError(f"{name} must be an integer ≥ 0, got {value!r}")
    return value
