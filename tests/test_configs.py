"""Every config builds, initialises, trains a step and samples on random data (reduced width),
and the README's table of parameter counts at the paper width is what the code computes."""

import glob
import importlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import ROOT
from score_jax import build
from score_jax import generate, noise, sharding, train
from score_jax import state as state_lib

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "default")))


def load(name):
  return importlib.import_module(f"configs.{name}").get_config()


def param_count(config):
  built = build.build(config)
  shapes = jax.eval_shape(
      lambda: built.network.init(jax.random.PRNGKey(0), *built.inputs))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def test_every_config_is_locked():
  for name in CONFIGS:
    c = load(name)
    with pytest.raises(AttributeError):
      c.model.ngff = 3
    with pytest.raises(AttributeError):
      c.trainig = 1


# EDM configs compile for minutes even at width 8; one stands for them here (DhariwalUNet,
# class labels), shrunk further. The others: their parameter counts (test_edm_train.py) and
# edm_mnist's tiny training and sampling tests.
REDUCED = [n for n in CONFIGS if not n.startswith("edm_")] + ["edm_imagenet64_adm"]
_seen, SHAPES, BUILT = set(), [], []
for _name in REDUCED:
  _c = load(_name)
  _key = (_c.model.name, _c.data.image_size, _c.data.channels)
  (BUILT if _key in _seen else SHAPES).append(_name)
  _seen.add(_key)
# Compiled and run: the design's own command (NCSNv2's deepest RefineNet, 256 px). The other
# shapes are traced only (every shape and key checked, nothing compiled): their families
# train in test_train, test_spine (NCSN too) and test_edm_train, and compiling them took 10
# of the suite's minutes (NCSN's CIFAR-10 shape alone 155 s with YNNPACK's fusions).
RUN = ["ncsnv2_ffhq"]
TRACED = [n for n in SHAPES if n not in RUN]


@pytest.mark.parametrize("name", BUILT)
def test_config_of_a_trained_shape_validates_and_builds(name):
  c = load(name)
  assert param_count(c) > 0  # build.build checks every section


def reduced(name):
  """The config at a width that compiles in seconds; its architecture otherwise kept."""
  c = load(name)
  c.model.ngf = 2
  c.model.num_classes = 2 if c.model.name == "ncsnv2" else c.model.num_classes
  c.training.batch_size = 2
  c.sampling.batch_size = 2
  c.sampling.n_steps_each = 1
  if c.model.name == "ncsn":
    c.model.num_classes = 2
  if c.model.name == "ddpm":  # every level and attention kept; width, depth and T shrunk
    c.model.ch, c.model.num_groups, c.model.num_res_blocks = 4, 4, 1
    c.diffusion.num_timesteps = 4
    c.sampling.progressive_ts = (3, 0)
  if c.model.name == "edm":  # ADM with labels, two levels, attention kept; width shrunk
    c.data.image_size, c.model.channel_mult, c.model.attn_resolutions = 16, (1, 2), (8,)
    c.model.model_channels, c.model.num_blocks = 64, 1  # 64: one attention head
    c.sampling.num_steps = 2
  build.build(c)
  return c


def step_and_sampler(c, mesh):
  built = build.build(c)
  abstract = state_lib.abstract_state(built, mesh)
  size, ch = c.data.image_size, c.data.channels
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(0), (2, size, size, ch)),
           "label": jnp.ones((2,), jnp.int32)}  # class-conditional configs need labels
  batch = jax.device_put(batch, NamedSharding(mesh, P(sharding.DATA_AXIS)))
  step = train.jit_train_step(train.train_step_of(built), mesh)
  sample = generate.jit_sample_fn(generate.sample_fn_of(built), mesh)
  return built, abstract, batch, step, sample


@pytest.mark.parametrize("name", TRACED)
def test_config_traces_a_train_step_and_sampler_at_reduced_width(name):
  c = reduced(name)
  _, abstract, batch, step, sample = step_and_sampler(c, sharding.data_mesh())
  new, metrics = jax.eval_shape(step, abstract, batch, jax.random.PRNGKey(1))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), new) == jax.tree.map(
      lambda x: (x.shape, x.dtype), abstract)
  assert metrics["loss"].shape == ()
  samples = jax.eval_shape(sample, abstract.ema_params, jax.random.PRNGKey(2), 0)
  assert samples.shape == (2, c.data.image_size, c.data.image_size, c.data.channels)


@pytest.mark.parametrize("name", RUN)
def test_config_trains_and_samples_at_reduced_width(name):
  c = reduced(name)
  mesh = sharding.data_mesh()
  built, _, batch, step, sample = step_and_sampler(c, mesh)
  state = state_lib.fresh_state(built, mesh)
  state, metrics = step(state, batch, jax.random.PRNGKey(1))
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  samples = sample(state.ema_params, jax.random.PRNGKey(2), 0)
  assert samples.shape == (2, c.data.image_size, c.data.image_size, c.data.channels)
  assert np.all(np.isfinite(np.asarray(samples)))


def readme_table(prefix=("ncsn",)):
  """{config: cells after the first} from the table rows of docs/training.md (NCSN rows:
  model, dataset, resolution, params, sigma_1, L, T, eps) and docs/systems.md (DDPM rows)
  whose config starts with one of `prefix`."""
  text = "".join(open(os.path.join(ROOT, "docs", page)).read()
                 for page in ("training.md", "systems.md"))
  rows = {}
  for line in text.splitlines():
    m = re.match(r"\|\s*`configs/(\w+)\.py`\s*\|(.*)\|\s*$", line)
    if m and m.group(1).startswith(prefix):
      rows[m.group(1)] = [cell.strip() for cell in m.group(2).split("|")]
  return rows


def test_docs_ddpm_table_matches_the_configs():
  """DDPM rows: model, dataset, resolution, params, lr, batch, steps, dropout, flips."""
  rows = readme_table(("ddpm",))
  paper = [n for n in CONFIGS if n.startswith("ddpm") and n != "ddpm_mnist"]
  assert sorted(rows) == sorted(paper)
  for name in paper:
    c = load(name)
    model, dataset, res, params, lr, batch, steps, dropout, flip = rows[name]
    assert model == c.model.name and dataset == c.data.dataset
    assert res == f"{c.data.image_size}x{c.data.image_size}"
    assert int(params.replace(",", "")) == param_count(c), name
    assert float(lr) == c.optim.lr and int(batch) == c.training.batch_size
    assert int(steps.replace(",", "")) == c.training.n_iters
    assert float(dropout) == c.model.dropout and (flip == "yes") == c.data.random_flip
    assert c.model.ema_rate == 0.9999 and c.optim.warmup == 5000 and c.optim.grad_clip == 1.0
  assert param_count(load("ddpm_cifar10")) == 35_746_307  # google/ddpm-cifar10-32


def test_docs_table_matches_the_configs_and_computed_parameter_counts():
  rows = readme_table()
  paper = [n for n in CONFIGS if n.startswith("ncsn") and n != "ncsnv2_mnist"]
  assert sorted(rows) == sorted(paper)
  for name in paper:
    c = load(name)
    model, dataset, res, params, s1, levels, steps, eps = rows[name]
    assert model == c.model.name and dataset == c.data.dataset
    assert res == f"{c.data.image_size}x{c.data.image_size}"
    assert int(params.replace(",", "")) == param_count(c), name
    assert float(s1) == c.model.sigma_begin and int(levels) == c.model.num_classes
    assert int(steps) == c.sampling.n_steps_each and float(eps) == c.sampling.step_lr


def test_mnist_step_lr_is_technique_4_for_its_levels():
  """The MNIST config and README say step_lr is Eq. 4's choice for its levels and T."""
  c = load("ncsnv2_mnist")
  want = noise.langevin_step_size(build.build(c).method.levels, c.sampling.n_steps_each)
  assert abs(c.sampling.step_lr / want - 1) < 0.01, (c.sampling.step_lr, want)
