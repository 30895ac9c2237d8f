"""The Colab notebooks, executed by nbclient at toy size (SCORE_JAX_NOTEBOOK_QUICK=1): every
cell must run, each notebook must draw its figures, and the repository keeps them without
outputs."""

import glob
import os

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# Figures each notebook draws (plt.show calls that run), at least.
MIN_FIGURES = {"01_quickstart.ipynb": 5, "02_samplers.ipynb": 5,
               "03_noise_techniques.ipynb": 3, "04_official_weights.ipynb": 3}


def test_every_notebook_is_tested_and_stored_without_outputs():
  assert sorted(os.path.basename(p) for p in NOTEBOOKS) == sorted(MIN_FIGURES)
  for path in NOTEBOOKS:
    book = nbformat.read(path, as_version=4)
    assert "colab.research.google.com" in book.cells[0].source, path
    assert "SCORE_JAX_NOTEBOOK_QUICK" in book.cells[1].source, path
    for cell in book.cells:
      if cell.cell_type == "code":
        assert cell.outputs == [] and cell.execution_count is None, (path, cell.source[:60])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_draws(path, monkeypatch):
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("SCORE_JAX_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  book = nbformat.read(path, as_version=4)
  # Raises CellExecutionError, with the cell and its traceback, on any error.
  NotebookClient(book, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  figures = sum(1 for cell in book.cells if cell.cell_type == "code"
                for out in cell.outputs if "image/png" in out.get("data", {}))
  assert figures >= MIN_FIGURES[os.path.basename(path)], figures
