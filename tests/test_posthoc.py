"""EDM2's post-hoc EMA: the power EMAs, the reconstruction weights, and the job."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from score_jax import build, checkpoints, optim, posthoc_ema, sharding
from score_jax import state as state_lib


def test_sigma_rel_to_gamma_is_edm2s_and_gives_that_width():
  assert posthoc_ema.sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=5e-3)  # EDM2 Sec. 3
  for rel in (0.05, 0.1, 0.2):
    g = posthoc_ema.sigma_rel_to_gamma(rel)
    c = posthoc_ema.power_weights(10_000, g, 10_000)
    t = np.arange(1, 10_001)
    mean = np.sum(c * t)
    assert np.sum(c) == pytest.approx(1.0, abs=1e-12)
    assert np.sqrt(np.sum(c * (t - mean) ** 2)) / 10_000 == pytest.approx(rel, rel=1e-3)
  with pytest.raises(ValueError, match="sigma_rel=0.5"):
    posthoc_ema.sigma_rel_to_gamma(0.5)


def _trajectory(steps=2000, dim=32, seed=0):
  rng = np.random.default_rng(seed)
  return np.cumsum(rng.normal(size=(steps, dim)), axis=0) + 10.0 * rng.normal(size=dim)


def _power_ema(theta, gamma, upto):
  """The training-time update, step by step (t = 1 first)."""
  ema = np.zeros(theta.shape[1])
  for t in range(1, upto + 1):
    beta = (1.0 - 1.0 / t) ** (gamma + 1.0)
    ema = beta * ema + (1.0 - beta) * theta[t - 1]
  return ema


def test_solve_weights_reconstructs_power_emas_from_snapshots():
  """Two EMAs (sigma_rel 0.05, 0.10) stored every 50 of 2,000 steps of a random walk: a
  stored pair comes back exactly, one in between within 1e-3 (relative)."""
  theta = _trajectory()
  steps = np.repeat(np.arange(50, 2001, 50), 2)
  rels = np.tile([0.05, 0.10], 40)
  snaps = np.stack([_power_ema(theta, posthoc_ema.sigma_rel_to_gamma(r), s)
                    for s, r in zip(steps, rels)])
  for rel, tol in ((0.10, 1e-6), (0.05, 1e-6), (0.07, 1e-3), (0.085, 1e-3)):
    w = posthoc_ema.solve_weights(steps, rels, 2000, rel)
    assert w.dtype == np.float64 and w.shape == (80,)
    want = _power_ema(theta, posthoc_ema.sigma_rel_to_gamma(rel), 2000)
    err = np.linalg.norm(w @ snaps - want) / np.linalg.norm(want)
    assert err < tol, (rel, err)
  # And an earlier step than the last snapshot.
  w = posthoc_ema.solve_weights(steps, rels, 1000, 0.07)
  want = _power_ema(theta, posthoc_ema.sigma_rel_to_gamma(0.07), 1000)
  assert np.linalg.norm(w @ snaps - want) / np.linalg.norm(want) < 1e-3


def test_power_emas_transform_is_the_update_rule():
  theta = _trajectory(steps=30, dim=4)
  gammas = (posthoc_ema.sigma_rel_to_gamma(0.05), posthoc_ema.sigma_rel_to_gamma(0.2))
  tx = optim.power_emas(gammas)
  params = {"w": jnp.zeros(4)}
  state = tx.init(params)
  for t in range(30):
    updates = {"w": jnp.asarray(theta[t]) - params["w"]}
    _, state = tx.update(updates, state, params)
    params = {"w": jnp.asarray(theta[t])}
  for g, ema in zip(gammas, state.emas):
    np.testing.assert_allclose(ema["w"], _power_ema(theta, g, 30), rtol=1e-5, atol=1e-5)


def _main(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_posthoc_mode_writes_a_workdir_that_samples(tmp_path, tiny):
  from score_jax import train  # pylint: disable=g-import-not-at-top
  wd, out = tmp_path / "run", tmp_path / "posthoc"
  c = tiny(**{"training.snapshot_sampling": False, "training.posthoc_snapshot_freq": 2})
  c.training.posthoc_sigma_rels = (0.05, 0.10)
  built = build.build(c)
  state = train.train_and_evaluate(built, str(wd))
  assert sorted(os.listdir(wd / "posthoc")) == ["2", "4"]
  tiny_cfg = os.path.join(ROOT, "tests", "tiny_mnist_config.py")
  flags = ["--config.training.posthoc_sigma_rels=(0.05, 0.1)"]
  res = _main(f"--config={tiny_cfg}", "--mode=posthoc_ema", f"--workdir={wd}", *flags,
              "--config.posthoc.sigma_rel=0.1", f"--config.posthoc.out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  # The target is one of the stored EMAs: the reconstruction is that EMA.
  b = build.build(c, "sample")
  target = state_lib.abstract_state(b, sharding.data_mesh())
  got = checkpoints.Checkpointer(str(out), b.signature).restore_latest(target)
  want = optim.power_emas_of(state.opt_state)[1]
  for a, w in zip(jax.tree.leaves(got.ema_params), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6)
  res = _main(f"--config={tiny_cfg}", "--mode=sample", f"--workdir={out}", *flags)
  assert res.returncode == 0 and (out / "samples" / "sample_4.npz").exists(), res.stderr[-2000:]
  # Bad input: one line, before anything is written.
  res = _main(f"--config={tiny_cfg}", "--mode=posthoc_ema", f"--workdir={wd}", *flags,
              f"--config.posthoc.out={tmp_path / 'other'}")
  assert res.returncode == 1 and "config.posthoc.sigma_rel=0.0" in res.stderr
  assert not (tmp_path / "other").exists()
