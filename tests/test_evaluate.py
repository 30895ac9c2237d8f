"""--mode=eval and --mode=eval_ref end to end on a tiny MNIST model, with pytorch-fid's
network on random weights (the real file cannot be downloaded here)."""

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from score_jax import build
from score_jax.eval import fid, reference, shards

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def inception_pth(tmp_path_factory):
  import torch  # pylint: disable=g-import-not-at-top
  from test_eval import recipe_state_dict  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("weights") / "pt_inception.pth")
  torch.save(collections.OrderedDict((k, torch.from_numpy(v))
                                     for k, v in recipe_state_dict().items()), path)
  return path


def reference_of(c, ref):
  built = build.build(c)
  return reference.reference_statistics(built.data, built.eval, ref)


def eval_config(tiny, inception_pth, ref, **overrides):
  c = tiny(**{"eval.num_samples": 16, "eval.inception_weights": inception_pth,
              "eval.ref_stats": ref, "eval.is_splits": 2, "eval.kid_subsets": 3,
              "eval.kid_subset_size": 8, "eval.ref_max_images": 24,
              "eval.ref_features": True, **overrides})
  return c


def test_eval_is_resumable_and_writes_its_provenance(tmp_path, tiny, inception_pth,
                                                    tiny_trained):
  wd = str(tmp_path / "run")
  shutil.copytree(tiny_trained, wd)  # checkpoints at steps 2 and 4
  ref = str(tmp_path / "ref.npz")
  c = eval_config(tiny, inception_pth, ref, **{"training.snapshot_sampling": False})
  stats = reference_of(c, ref)
  assert stats["mu"].shape == (2048,) and stats["features"].shape == (24, 2048)
  with np.load(ref) as f:  # what pytorch-fid and EDM's fid.py read
    assert f["mu"].dtype == np.float64 and f["sigma"].shape == (2048, 2048)

  first = fid.evaluate(build.build(c), wd)
  assert first["num_samples"] == 16 and np.isfinite(first["fid"]) and first["fid"] > 0
  assert np.isfinite(first["is_mean"]) and np.isfinite(first["kid_mean"])
  (tag,) = os.listdir(os.path.join(wd, "eval", "4"))
  shard_dir = os.path.join(wd, "eval", "4", tag, "seed0")
  files = sorted(os.listdir(shard_dir))
  assert files == ["shard_00000.npz", "shard_00001.npz"]
  saved = json.load(open(os.path.join(wd, "eval", "4.json")))
  assert saved["fid"] == first["fid"] and len(saved["weights_sha256"]) == 64
  assert saved["ref_sha256"] == shards.sha256_of_file(ref)
  assert saved["sampling"]["batch_size"] == 8 and saved["seed"] == 0
  assert saved["fid_min"] == saved["fid_max"] == saved["fid"]

  # A job killed after its first shard (and during the write of the second: a temporary
  # file) and run again computes only what is missing and gives the same numbers.
  os.remove(os.path.join(shard_dir, files[1]))
  open(os.path.join(shard_dir, files[1] + ".tmp.npz"), "wb").write(b"half")
  mtime = os.path.getmtime(os.path.join(shard_dir, files[0]))
  again = fid.evaluate(build.build(c), wd)
  assert os.path.getmtime(os.path.join(shard_dir, files[0])) == mtime
  for key in ("fid", "is_mean", "is_std", "kid_mean"):
    assert again[key] == first[key], key


@pytest.mark.parametrize("override,match", [
    ({"eval.num_samples": 0}, "config.eval.num_samples=0 must be positive"),
    ({"eval.ref_stats": "nowhere.npz"}, "does not exist"),
])
def test_eval_bad_input_is_one_line(tmp_path, tiny, inception_pth, override, match):
  wd = tmp_path / "run"
  args = [f"--config.{k}={v}" for k, v in dict(
      {"eval.num_samples": 36, "eval.inception_weights": inception_pth,
       "eval.ref_stats": str(tmp_path / "ref.npz")}, **override).items()]
  np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048))
  out = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"),
                        "--config=" + os.path.join(ROOT, "configs", "ncsnv2_mnist.py"),
                        "--mode=eval", f"--workdir={wd}", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert out.returncode == 1 and match in out.stderr and "Traceback" not in out.stderr, \
      out.stderr[-2000:]
  assert not wd.exists()


def test_reference_of_the_wrong_dimension_is_refused(tmp_path):
  np.savez(tmp_path / "r.npz", mu=np.zeros(64), sigma=np.eye(64))
  with pytest.raises(ValueError, match="2048 dimensions"):
    shards.load_reference(str(tmp_path / "r.npz"), 2048)


def test_sweep_over_checkpoints_and_repeats(tmp_path, tiny, inception_pth, tiny_trained):
  wd = str(tmp_path / "run")
  shutil.copytree(tiny_trained, wd)  # the run below: checkpoints at steps 2 and 4
  ref = str(tmp_path / "ref.npz")
  c = eval_config(tiny, inception_pth, ref, **{
      "training.n_iters": 4, "training.snapshot_freq": 2, "training.snapshot_sampling": False,
      "eval.num_samples": 8, "eval.checkpoints": "all", "eval.repeats": 2,
      "eval.kid_subset_size": 4})
  reference_of(c, ref)
  result = fid.evaluate(build.build(c), wd)
  assert sorted(result["sweep"]) == [2, 4]
  best = json.load(open(os.path.join(wd, "eval", "sweep.json")))
  assert best["best_fid"] == min(result["sweep"].values())
  assert os.path.getsize(os.path.join(wd, "eval", "sweep.png")) > 1000
  step4 = json.load(open(os.path.join(wd, "eval", "4.json")))
  fids = [r["fid"] for r in step4["repeats"]]
  assert [r["seed"] for r in step4["repeats"]] == [0, 1] and fids[0] != fids[1]
  assert step4["fid"] == pytest.approx(np.mean(fids)) and step4["fid_min"] == min(fids)
  with pytest.raises(ValueError, match="no checkpoint at step"):
    fid.checkpoint_steps("3", [2, 4])


def test_eval_needs_no_multiple_of_the_batch_and_its_numbers_not_the_batch(
    tmp_path, tiny, inception_pth, tiny_trained):
  """20 samples in batches of 8 (the last one padded) and of 5: the same samples, so the
  same features, whatever the batch; the padding's rows are dropped."""
  ref = str(tmp_path / "ref.npz")
  feats = {}
  for batch in (8, 5):
    wd = str(tmp_path / f"run{batch}")
    shutil.copytree(tiny_trained, wd)
    c = eval_config(tiny, inception_pth, ref, **{
        "training.snapshot_sampling": False, "eval.num_samples": 20,
        "sampling.batch_size": batch, "eval.kid_subset_size": 8, "eval.save_samples": True})
    if batch == 8:
      reference_of(c, ref)
    result = fid.evaluate(build.build(c), wd)
    assert result["num_samples"] == 20
    (tag,) = os.listdir(os.path.join(wd, "eval", "4"))
    shard_dir = os.path.join(wd, "eval", "4", tag, "seed0")
    names = sorted(os.listdir(shard_dir))
    assert len(names) == -(-20 // batch)
    feats[batch] = np.concatenate([np.load(os.path.join(shard_dir, n))["samples"]
                                   for n in names]).astype(np.int32)
  assert feats[8].shape == (20, 28, 28, 1)
  # Another batch size is another XLA program: a pixel may round to the next uint8 level.
  diff = np.abs(feats[8] - feats[5])
  assert diff.max() <= 1 and diff.mean() < 1e-3, (diff.max(), diff.mean())
