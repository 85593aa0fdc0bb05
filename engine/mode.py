"""How faithfully an engine keeps a state: exact, or sticky with a hysteresis δ (docs/design.md).

Apart from the engine so that settings and command lines can name a mode without loading torch.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    delta: float = 0.0  # hysteresis: 0 is exact mode, > 0 sticky
    sweep: int = 2  # sticky: tokens per layer re-quantized exactly per edit, in turn
    max_updates: int = 255  # running updates before a row is recomputed in full (at most)

    def __post_init__(self) -> None:
        if self.delta < 0:
            raise ValueError(f"delta must be ≥ 0, got {self.delta}")
        if not 1 <= self.max_updates <= 255:
            raise ValueError(f"max_updates must be in [1, 255], got {self.max_updates}")
        if self.sweep < 0:
            raise ValueError(f"sweep must be ≥ 0, got {self.sweep}")

    @property
    def name(self) -> str:
        return "exact" if self.delta == 0 else "sticky"


EXACT = Mode()
# Sticky mode's default hysteresis, tuned for the shipped student (MODEL.md, "Evaluation"): its
# 96 codes per token each make the token dirty when they flip, so the band must be wide; 8 keeps
# fewer tokens dirty than the 48-code student kept at 2, and the state's distance to an exact
# pass did not grow with it.
STICKY_DELTA = 8.0
