"""What the MNIST experiments share: a trained workdir of a config, and the Frechet distance
the main job ends with (score_jax.eval.mnist_features, against the bundled subset's own
statistics)."""

import os
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_jax import build, checkpoints, data, train  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax.eval import metrics, mnist_features, shards  # pylint: disable=g-import-not-at-top,wrong-import-position


def trained(config, workdir: str, mode: str = "train"):
  """The Built of `config` for `mode`, its workdir trained first when it does not hold the
  last checkpoint. A workdir trained with post-hoc EMAs (training.posthoc_sigma_rels, which
  the checkpoint signature records) is taken as it is: the config is given the same."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.eval.after_training = False
    config.training.snapshot_sampling = False
  ckpt = checkpoints.Checkpointer(workdir, {}, create=False)
  if ckpt.latest_step() is not None:
    rels = ckpt.stored_signature(ckpt.latest_step()).get("training.posthoc_sigma_rels")
    if rels and not config.training.posthoc_sigma_rels:
      with config.unlocked():
        config.training.posthoc_sigma_rels = tuple(rels)
  built = build.build(config)
  if ckpt.latest_step() != built.train.n_iters:
    t0 = time.time()
    train.train_and_evaluate(built, workdir)
    print(f"trained {workdir} in {time.time() - t0:.0f} s", flush=True)
  return built if mode == "train" else build.build(config, mode)


def mnist_frechet(spec) -> Callable[[np.ndarray], float]:
  """fn(images [N, 28, 28, 1] in [0, 1]) -> the MNIST Frechet distance against the training
  split of `spec` (a build.DataSpec); N >= 2."""
  features = mnist_features.load_mnist_features()
  real = data.load_images(spec, "train")
  ref = metrics.feature_statistics(features(shards.to_inception_input(real))[0])

  def fd(x01) -> float:
    own = metrics.feature_statistics(features(shards.to_inception_input(x01))[0])
    return float(metrics.frechet_distance(*own, *ref))

  return fd
