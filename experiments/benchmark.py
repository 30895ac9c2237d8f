"""Speed of training and sampling for a config, measured side by side in one run.

  python experiments/benchmark.py --config=configs/ncsnv2_mnist.py
  python experiments/benchmark.py --config=configs/ncsnv2_mnist.py --config.model.ngf=32

  python experiments/benchmark.py --config=configs/ddpm_cifar10.py \
      --config.training.batch_size=16 --config.sampling.batch_size=16
  python experiments/benchmark.py --config=configs/edm_cifar10_ddpmpp.py \
      --config.training.batch_size=16 --config.sampling.batch_size=16

Prints one table: compile times (s), train steps/s and images/s, and sampler steps/s and
images*steps/s (annealed Langevin for NCSN/NCSNv2, ancestral for DDPM, EDM's Heun sampler
for EDM, where a step is one network call), on random data of
the config's shape over all local devices, and for RefineNets the CRP's max pooling (value
and gradient) done by flax and by score_jax's own VJP. Timings exclude compilation and
block on the results.
"""

import copy
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_jax import generate, sharding, train  # pylint: disable=g-import-not-at-top
from score_jax.models import layers  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("train_steps", 10, "Timed train steps (after one compile step).")
flags.DEFINE_integer("sample_levels", 4, "Noise levels the timed Langevin sampler runs (of L); "
                     "for DDPM, the steps of the timed ancestral chain.")
flags.DEFINE_integer("repeats", 2, "Timed sampler runs.")
flags.DEFINE_integer("data_size", 0, "Also time the input pipeline (decode, shorter side + "
                     "centre crop, flip) on JPEG and PNG files of this size; 0: skip.")
flags.mark_flag_as_required("config")


def _timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def benchmark(config, train_steps: int, sample_levels: int, repeats: int) -> dict:
  """Measures and returns the numbers of the table (seconds, steps/s, images/s)."""
  train.validate_config(config)
  mesh = sharding.data_mesh()
  model, tx, state = train.build(config, mesh)
  size, ch = config.data.image_size, config.data.channels
  b = config.training.batch_size
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  batch = jax.device_put(
      {"image": np.random.default_rng(0).random((b, size, size, ch), np.float32),
       "label": np.zeros((b,), np.int32)}, data)
  step_fn = train.jit_train_step(train.make_train_step(config, model, tx), mesh)
  key = jax.random.PRNGKey(0)

  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch, key).compile()
  train_compile = time.perf_counter() - t0
  (state, _), _ = _timed(compiled, state, batch, key)  # first run allocates
  t0 = time.perf_counter()
  for _ in range(train_steps):
    state, m = compiled(state, batch, key)
  jax.block_until_ready(m)
  train_time = time.perf_counter() - t0

  if config.model.name == "ddpm":
    # The ancestral sampler's cost is one network call per step whatever T is: time a chain
    # of `sample_levels` steps (the same network on a shorter schedule).
    short = copy.deepcopy(config)
    short.diffusion.num_timesteps = max(sample_levels, 2)
    short.sampling.method, short.sampling.progressive_ts = "ancestral", ()
    n_steps = short.diffusion.num_timesteps
    sample_fn = generate.jit_sample_fn(generate.make_sample_fn(short, model, batch_sharding=data),
                                       mesh)
  elif config.model.name == "edm":
    # EDM's sampler with `sample_levels` steps: 2 N - 1 network calls.
    short = copy.deepcopy(config)
    short.sampling.method, short.sampling.num_steps = "edm", max(sample_levels, 2)
    n_steps = 2 * short.sampling.num_steps - 1
    sample_fn = generate.jit_sample_fn(generate.make_sample_fn(short, model, batch_sharding=data),
                                       mesh)
  else:
    # Annealed Langevin over the first `sample_levels` levels: its cost is linear in
    # levels x steps, so a few levels give the rate of the whole run.
    levels = min(sample_levels, config.model.num_classes)
    n_steps = levels * config.sampling.n_steps_each
    sample_fn = generate.jit_sample_fn(generate.make_sample_fn(
        config, model, batch_sharding=data, num_levels=levels), mesh)
  t0 = time.perf_counter()
  sample_compiled = sample_fn.lower(state.params, key).compile()
  sample_compile = time.perf_counter() - t0
  times = []
  for r in range(repeats + 1):
    _, dt = _timed(sample_compiled, state.params, jax.random.fold_in(key, r))
    times.append(dt)
  sample_time = min(times[1:]) if repeats else times[0]
  sb = config.sampling.batch_size
  results = {
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "train batch": b,
      "train compile (s)": train_compile,
      "train steps/s": train_steps / train_time,
      "train images/s": train_steps * b / train_time,
      "sample batch": sb,
      "sampler steps timed": n_steps,
      "sampler compile (s)": sample_compile,
      "sampler steps/s": n_steps / sample_time,
      "sampler image-steps/s": n_steps * sb / sample_time,
  }
  if config.model.name in ("ncsn", "ncsnv2"):
    pool_ms = _max_pool_grad_ms((b, size, size, config.model.ngf), repeats=max(repeats, 1) * 5)
    results["max-pool grad, flax (ms)"] = pool_ms["flax"]
    results["max-pool grad, score_jax (ms)"] = pool_ms["score_jax"]
  return results


def _max_pool_grad_ms(shape, repeats: int) -> dict:
  """Milliseconds for value and gradient of the CRP's 5x5 max pooling on one [B, H, W, C]
  array (the widest CRP of the network): flax's reduce_window against `layers.max_pool5`.
  """
  def flax_pool(x):
    return nn.max_pool(x, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)))

  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  out = {}
  for name, pool in (("flax", flax_pool), ("score_jax", layers.max_pool5)):
    grad = jax.jit(jax.value_and_grad(lambda v, pool=pool: jnp.sum(pool(v) ** 2)))
    jax.block_until_ready(grad(x))
    t0 = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(grad(x))
    out[name] = 1e3 * (time.perf_counter() - t0) / repeats
  return out


def data_throughput(fmt: str, size: int = 256, n: int = 64, batch: int = 16,
                    batches: int = 12, threads: int = 2) -> float:
  """images/s of the input pipeline on `n` synthetic photo-like files (upsampled noise, so
  that JPEG and PNG compress about as photos do) of 1.25 x 1.5 size, in `fmt` ('png' or
  'jpeg'): decode, shorter side to `size` + centre crop (LSUN's preprocessing), flip, batch,
  with `threads` reading threads."""
  import tempfile  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from score_jax import data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as root:
    h, w = int(size * 1.25), int(size * 1.5)
    for i in range(n):
      coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
      img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
      if fmt == "jpeg":
        img.save(os.path.join(root, f"{i:04d}.jpg"), quality=90)
      else:
        img.save(os.path.join(root, f"{i:04d}.png"))
    c = default.get_default_config()
    c.data.path, c.data.channels, c.data.image_size = root, 3, size
    c.data.preprocess, c.data.random_flip, c.data.num_threads = ("resize_short_center_crop",
                                                                 True, threads)
    c.training.batch_size = batch
    it = iter(data.make_train_dataset(c))
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    return batches * batch / (time.perf_counter() - t0)


def format_table(results: dict) -> str:
  width = max(len(k) for k in results)
  rows = []
  for k, v in results.items():
    rows.append(f"{k:<{width}}  {v:>12.3f}" if isinstance(v, float) else f"{k:<{width}}  {v!s:>12}")
  return "\n".join(rows)


def main(argv):
  del argv
  results = benchmark(FLAGS.config, FLAGS.train_steps, FLAGS.sample_levels, FLAGS.repeats)
  if FLAGS.data_size:
    for fmt in ("jpeg", "png"):
      results[f"input pipeline {FLAGS.data_size}px {fmt} images/s"] = data_throughput(
          fmt, FLAGS.data_size)
  print(format_table(results))


if __name__ == "__main__":
  app.run(main)
