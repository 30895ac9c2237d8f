"""The builder: the config is read once, every object built once, every check before work."""

import ast
import glob
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from score_jax import build, models, noise, optim

TINY = os.path.join(ROOT, "tests", "tiny_mnist_config.py")


def _counting(monkeypatch, owner, name, counts, key):
  original = owner[name] if isinstance(owner, dict) else getattr(owner, name)

  def counted(*args, **kwargs):
    counts[key] = counts.get(key, 0) + 1
    return original(*args, **kwargs)

  if isinstance(owner, dict):
    monkeypatch.setitem(owner, name, counted)
  else:
    monkeypatch.setattr(owner, name, counted)


def test_a_train_run_with_its_closing_eval_builds_each_object_once(tmp_path, tiny, monkeypatch):
  """What main.run does for `--mode=train` (build, then the job; main itself is not imported
  here: its absl flags would clash with the benchmark's in the same worker): network,
  method, learning-rate schedule and noise levels are each made once, though the run
  trains, writes snapshot grids and evaluates."""
  from score_jax import train  # pylint: disable=g-import-not-at-top
  counts = {}
  _counting(monkeypatch, models.NETWORKS, "ncsnv2", counts, "network")
  _counting(monkeypatch, build.METHODS, "ncsnv2", counts, "method")
  _counting(monkeypatch, optim, "learning_rate", counts, "schedule")
  _counting(monkeypatch, noise, "geometric_sigmas", counts, "noise levels")
  c = tiny(**{"eval.after_training": True, "eval.num_samples": 12, "eval.is_splits": 1,
              "eval.kid_subset_size": 12})
  train.train_and_evaluate(build.build(c, "train"), str(tmp_path / "wd"))
  assert json.load(open(tmp_path / "wd" / "eval" / "4.json"))["num_samples"] == 12
  assert os.path.exists(tmp_path / "wd" / "samples" / "image_grid_4.png")
  assert counts == {"network": 1, "method": 1, "schedule": 1, "noise levels": 1}


def _functions(path):
  tree = ast.parse(open(path).read())
  return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_config_is_read_in_few_places_and_functions_stay_small():
  files = sorted(glob.glob(os.path.join(ROOT, "score_jax", "**", "*.py"), recursive=True))
  takers, ml_collections_files, long, wide = {}, set(), [], []
  for path in files:
    rel = os.path.relpath(path, ROOT)
    text = open(path).read()
    if "ml_collections" in text and ("import ml_collections" in text
                                     or "from ml_collections" in text):
      ml_collections_files.add(rel)
    for fn in _functions(path):
      a = fn.args
      names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
      if {"config", "cfg"} & set(names):
        takers.setdefault(rel, []).append(fn.name)
      if len(names) + bool(a.vararg) + bool(a.kwarg) > 12:
        wide.append(f"{rel}:{fn.name}")
      if not rel.startswith(os.path.join("score_jax", "models")) and (
          fn.end_lineno - fn.lineno + 1 > 90):
        long.append(f"{rel}:{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)")
  assert sum(len(v) for v in takers.values()) <= 12 and len(takers) <= 3, takers
  assert len(ml_collections_files) <= 2, ml_collections_files
  assert not long, long
  assert not wide, wide


def _main(*args, timeout=120):
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("flag,match", [
    ("--config.eval.after_training=bogus", "after_training"),
    ("--config.eval.num_samples=0", "config.eval.num_samples=0"),
    ("--config.sampling.method=heun2", "config.sampling.method='heun2'"),
    ("--config.data.preprocess=blur", "config.data.preprocess='blur'"),
    ("--config.training.log_freq=0", "config.training.log_freq=0"),
    ("--config.eval.metric=nll", "config.eval.metric='nll'"),
])
def test_a_bad_value_in_any_section_is_one_line_before_anything_is_written(tmp_path, flag,
                                                                           match):
  wd = tmp_path / "wd"
  start = time.time()
  out = _main(f"--config={TINY}", "--mode=train", f"--workdir={wd}", flag)
  assert out.returncode != 0 and match in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert not wd.exists()
  assert time.time() - start < 30


def test_convert_without_a_path_is_refused_at_build(tmp_path):
  out = _main(f"--config={TINY}", "--mode=convert", f"--workdir={tmp_path / 'wd'}")
  assert out.returncode == 1 and "needs --config.convert.path" in out.stderr, out.stderr
  assert not (tmp_path / "wd").exists()


def test_built_objects_are_plain_and_shared(tiny):
  built = build.build(tiny())
  # The method's levels are the network's: computed once, handed to both.
  assert tuple(float(v) for v in built.method.levels) == built.network.sigmas
  assert built.sampler.name == "langevin" and built.train.rounds == 1
  assert built.eval_after_training is None  # tiny() turns the closing eval off
  with pytest.raises(AttributeError, match="read-only"):
    built.sampler.options.batch_size = 3


def test_sample_mode_runs_a_few_step_solver_from_the_command_line(tiny_trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  wd = tmp_path / "wd"
  shutil.copytree(tiny_trained, wd)
  for extra in (("--config.sampling.method=dpmpp_2m",),
                ("--config.sampling.method=unipc", "--config.sampling.order=3",
                 "--config.sampling.schedule=log_snr")):
    out = _main(f"--config={TINY}", "--mode=sample", f"--workdir={wd}",
                "--config.sampling.num_steps=10", *extra, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    x = np.load(wd / "samples" / "sample_4.npz")["samples"]
    assert x.shape == (8, 28, 28, 1) and np.all(np.isfinite(x))


@pytest.mark.parametrize("method,flag,match", [
    ("dpmpp_2m", "--config.sampling.solver_type=rk4", "config.sampling.solver_type='rk4'"),
    ("dpmpp_2m", "--config.sampling.schedule=leading", "spaces a DDPM network's own timesteps"),
    ("unipc", "--config.sampling.order=7", "config.sampling.order=7"),
    ("heun3", "--config.sampling.order=1", "config.sampling.method='heun3'"),
])
def test_solver_options_are_checked_at_build(method, flag, match, tiny):
  c = tiny(**{"sampling.method": method})
  key, value = flag[len("--config."):].split("=")
  section, name = key.split(".")
  c[section][name] = type(c[section][name])(value)
  with pytest.raises(ValueError, match=match):
    build.build(c)


def test_main_keeps_a_persistent_compilation_cache_and_can_turn_it_off(tiny_trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  wd = tmp_path / "wd"
  shutil.copytree(tiny_trained, wd)
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  for cache, expect in ((tmp_path / "cache", True), (tmp_path / "none", False)):
    flag = f"--compilation_cache={cache}" if expect else "--compilation_cache="
    # The real config file with the tiny run's sizes: tests/tiny_mnist_config.py imports
    # conftest, which sets JAX_COMPILATION_CACHE_DIR (and that wins over the flag).
    out = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"),
                          "--config=" + os.path.join(ROOT, "configs", "ncsnv2_mnist.py"),
                          "--config.model.ngf=4", "--config.model.num_classes=3",
                          "--config.model.sigma_begin=1.0", "--config.sampling.batch_size=8",
                          "--config.sampling.n_steps_each=2", "--mode=sample",
                          f"--workdir={wd}", flag], capture_output=True,
                         text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (cache.exists() and any(cache.iterdir())) == expect
