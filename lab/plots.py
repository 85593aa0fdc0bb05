"""What the lab's plots share: a dashed reference line with its value in the legend."""

from matplotlib.axes import Axes


def reference_line(ax: Axes, value: float, label: str, vertical: bool = True) -> None:
    """A dashed black line at `value` (across x if `vertical`, else across y), then the
    legend, which names it."""
    (ax.axvline if vertical else ax.axhline)(value, color="black", linestyle="--", label=label)
    ax.legend()
