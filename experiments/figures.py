"""Figure helpers for the experiment scripts: headless matplotlib, saved as PNG."""

import os


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(fig, path: str) -> None:
  """Write `fig` to `path` (PNG), creating its folder, and free it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  pyplot().close(fig)
