import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from score_jax import build
from score_jax import calibrate, noise


def test_calibrate_on_made_data(tiny):
  rng = np.random.default_rng(0)
  images = rng.random((200, 28, 28, 1)).astype(np.float32)
  c = tiny()
  r = calibrate.calibrate(images, build.build(c).noise_settings, c.seed)
  flat = images.reshape(200, -1).astype(np.float64)
  want = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1).max())
  assert r["sigma_begin"] == pytest.approx(want, rel=1e-5)
  assert r["num_classes"] == noise.num_noise_levels(r["sigma_begin"], c.model.sigma_end, 784)
  assert 0.5 <= r["coverage"] < 0.52
  assert abs(r["eq4_ratio"] - 1) <= abs(r["config_eq4_ratio"] - 1) + 1e-9
  line = calibrate.override_line(r)
  assert line.startswith("--config.model.sigma_begin=") and "--config.sampling.step_lr=" in line


def test_calibrate_mode_of_main(tmp_path):
  res = subprocess.run([sys.executable, "main.py", "--config=configs/ncsnv2_mnist.py",
                        "--mode=calibrate", f"--workdir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "sigma_1 (Technique 1" in res.stdout and "15.83" in res.stdout
  with open(os.path.join(tmp_path, "calibration.txt")) as f:
    assert "override: --config.model.sigma_begin=15.83" in f.read()
