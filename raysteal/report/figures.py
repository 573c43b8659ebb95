"""What every report figure shares: a headless pyplot, and writing a PNG atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raysteal.atomic import write_atomically


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend."""
    # matplotlib is heavy and only figures need it: imported where it is used
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib is heavy and only figures need it: imported where it is used
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG atomically (a temp file, then ``os.replace``) and close it: a
    reader, or a report killed mid-write, sees the old figure or the whole new one."""
    try:
        write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))  # legends outside the axes
    finally:
        pyplot().close(fig)
