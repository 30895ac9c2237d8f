"""The README's library example runs as written, on a trained workdir."""

import os
import re

import numpy as np

from conftest import ROOT


def test_readme_snippet_samples_a_trained_workdir(tiny_trained, monkeypatch):
  text = open(os.path.join(ROOT, "README.md")).read()
  (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
  assert len(snippet.strip().splitlines()) <= 15
  # The same code on the tests' tiny run: its config and workdir instead of the main job's.
  import configs  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  tiny = tiny_config()
  monkeypatch.setattr(configs, "ncsnv2_mnist",
                      type("M", (), {"get_config": staticmethod(lambda: tiny)}), raising=False)
  code = snippet.replace("from configs import ncsnv2_mnist", "ncsnv2_mnist = configs.ncsnv2_mnist")
  code = code.replace('"workdir/mnist"', repr(tiny_trained))
  scope = {"configs": configs}
  exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  assert scope["images"].shape == (16, 28, 28, 1) and np.all(np.isfinite(scope["images"]))
  assert scope["heun"].shape == (16, 28, 28, 1) and np.all(np.isfinite(scope["heun"]))
