"""Speed of training and sampling for a config, measured side by side in one run.

  python experiments/benchmark.py --config=configs/ncsnv2_mnist.py
  python experiments/benchmark.py --config=configs/ncsnv2_mnist.py --config.model.ngf=32

  python experiments/benchmark.py --config=configs/ddpm_cifar10.py \
      --config.training.batch_size=16 --config.sampling.batch_size=16
  python experiments/benchmark.py --config=configs/edm_cifar10_ddpmpp.py \
      --config.training.batch_size=16 --config.sampling.batch_size=16

Against the official NCSNv2 PyTorch code (a checkout of ermongroup/ncsnv2; torch needed)
and, for DDPM's CIFAR-10 U-Net, diffusers' UNet2DModel of the same size (when diffusers is
installed):

  python experiments/benchmark.py --official=PATH/TO/ncsnv2 --json=speed.json
  python experiments/benchmark.py --official=PATH/TO/ncsnv2 --official-edm=PATH/TO/edm \
      --json=speed.json

`--official-edm` (a checkout of NVlabs/edm, used as a library: its EDMPrecond, SongUNet /
DhariwalUNet, EDMLoss and generate.py's edm_sampler) is compared on EDM's CIFAR-10 DDPM++
at batch 8 (edm_cifar10_ddpmpp_b8; a sampler step is one Heun step, 2 network calls) and a
reduced ADM (edm_cifar10_adm_mc64_b4). ddpm_cifar10_dpmpp_b8 times the whole DPM-Solver++
2M run of 20 steps, ours against diffusers' DPMSolverMultistepScheduler on the same-size
UNet2DModel (images/s in the record). Every record of ours also carries compile_cold_s and
compile_warm_s: the program compiled by a fresh process with an empty persistent
compilation cache, then by another on what the first stored (`--nowarm_start` skips it).

runs both on the CIFAR-10 model at ngf 32 / batch 16 and ngf 128 / batch 8 and on the DDPM
U-Net at batch 8 (`--shapes`), train step and sampler step, each measurement in its own
child process with the same thread count, ours and theirs alternating for `--rounds` rounds
(the best of each kept), and prints
steps/s, the ratio, compile time (ours), peak resident memory of the process, and minor
page faults and kernel CPU seconds per step (what allocating memory costs). `--json`
writes the same as a list of records (name, job, ours_steps_per_s, official_steps_per_s,
ratio, official, ...). Without `--official` the NCSNv2 records carry our numbers only. NCSNv2
sampling records also carry the compile time of the whole Langevin sampler at L = 10 and
L = 2311 (ours_compile_s_L10, ours_compile_s_L2311). Train records also carry the step's
GFLOP (XLA's count of our program; the same network on both sides) and the GFLOP/s each
side reaches with it, beside the rate of one 3x3 convolution (256 channels, 16x16, batch
8) in XLA and in torch on the same CPU: how near each side's step runs to its own
convolution kernels (gflop_per_step, ours/official_gflops, ours/official_conv_gflops).

Memory per device of the train step, float32 / bfloat16 compute and without / with
rematerialisation (`model.dtype`, `model.remat`), from XLA's buffer assignment
(`jax.jit(...).lower(...).compile().memory_analysis()`; nothing is run):

  python experiments/benchmark.py --config=configs/ncsnv2_ffhq.py --memory
  python experiments/benchmark.py --config=configs/ncsnv2_ffhq.py --memory --topology=v5p:2x2x1

`--topology` compiles for TPU chips that need not be there (libtpu installed: `pip install
libtpu`; jax's ahead-of-time compilation for a topology), so accelerator memory is measured
from any machine; without it, for this process's devices. The batch is the config's global
batch split over the topology's devices.

Without --official: one table of compile times (s), train steps/s and images/s, and sampler steps/s and
images*steps/s (annealed Langevin for NCSN/NCSNv2, ancestral for DDPM, EDM's Heun sampler
for EDM, where a step is one network call), on random data of
the config's shape over all local devices, and for RefineNets the CRP's max pooling (value
and gradient) done by flax and by score_jax's own VJP. Timings exclude compilation and
block on the results.
"""

import copy
import os
import re
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_jax import host  # pylint: disable=g-import-not-at-top,wrong-import-position

if __name__ == "__main__":
  # As main.py: malloc's huge-page setting is read at process start (score_jax.host).
  host.reexec_with_malloc_tunables()

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from score_jax import build, generate, sharding, summary, train  # pylint: disable=g-import-not-at-top
from score_jax import state as state_lib  # pylint: disable=g-import-not-at-top
from score_jax.models import layers  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (the single-config table).",
                                lock_config=True)
flags.DEFINE_string("official", None, "A checkout of ermongroup/ncsnv2: measure it side by "
                    "side with ours on --shapes.")
flags.DEFINE_string("json", None, "Also write the side-by-side records to this JSON file.")
flags.DEFINE_string("official-edm", None, "A checkout of NVlabs/edm: measure its networks, "
                    "loss and sampler side by side with ours on the edm_ --shapes.")
flags.DEFINE_list("shapes", ["ncsnv2_cifar10_ngf32_b16", "ncsnv2_cifar10_ngf128_b8",
                            "ddpm_cifar10_b8", "ddpm_cifar10_dpmpp_b8", "edm_cifar10_ddpmpp_b8",
                            "edm_cifar10_adm_mc64_b4"],
                  "Side-by-side shapes: ncsnv2_cifar10_ngf<N>_b<B> (against --official) or "
                  "ddpm_cifar10_b<B> (against diffusers' UNet2DModel, when installed).")
flags.DEFINE_integer("rounds", 3, "Side by side: alternating rounds; the best of each kept.")
flags.DEFINE_integer("threads", 0, "Side by side: torch's threads (0: every core, as XLA:CPU "
                     "uses).")
flags.DEFINE_bool("warm_start", True, "Side by side: also compile our programs with an empty "
                  "and then a filled persistent compilation cache (compile_cold_s / _warm_s).")
flags.DEFINE_string("child", None, "Internal: one side-by-side measurement (JSON spec).")
flags.DEFINE_integer("train_steps", 10, "Timed train steps (after one compile step).")
flags.DEFINE_integer("sample_levels", 4, "Noise levels the timed Langevin sampler runs (of L); "
                     "for DDPM, the steps of the timed ancestral chain.")
flags.DEFINE_integer("repeats", 2, "Timed sampler runs.")
flags.DEFINE_bool("memory", False, "Print the train step's memory per device for float32 / "
                  "bfloat16 and without / with remat, instead of timing.")
flags.DEFINE_list("memory_dtypes", ["float32", "bfloat16"], "--memory: the compute dtypes "
                  "measured (each without and with remat).")
flags.DEFINE_string("topology", None, "--memory: compile for this TPU topology (e.g. "
                    "v5p:2x2x1, v5e:2x2) instead of the local devices; needs libtpu.")
flags.DEFINE_integer("data_size", 0, "Also time the input pipeline (decode, shorter side + "
                     "centre crop, flip) on JPEG and PNG files of this size; 0: skip.")


def _start():
  return time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)


def _rates(steps: int, start) -> dict:
  """steps/s since `start` (from `_start()`), and per step this process's minor page faults
  and kernel CPU seconds (all threads): what page-faulting allocations cost."""
  t0, r0 = start
  seconds = time.perf_counter() - t0
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  return {"steps_per_s": steps / seconds,
          "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
          "kernel_s_per_step": (r1.ru_stime - r0.ru_stime) / steps}


def _timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def benchmark(config, train_steps: int, sample_levels: int, repeats: int) -> dict:
  """Measures and returns the numbers of the table (seconds, steps/s, images/s)."""
  built = build.build(config)
  mesh = sharding.data_mesh()
  state = state_lib.fresh_state(built, mesh)
  size, ch = config.data.image_size, config.data.channels
  b = config.training.batch_size
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  batch = jax.device_put(
      {"image": np.random.default_rng(0).random((b, size, size, ch), np.float32),
       "label": np.zeros((b,), np.int32)}, data)
  step_fn = train.jit_train_step(train.train_step_of(built), mesh)
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
    sample_fn = generate.jit_sample_fn(
        generate.sample_fn_of(build.build(short, "sample"), batch_sharding=data), mesh)
  elif config.model.name == "edm":
    # EDM's sampler with `sample_levels` steps: 2 N - 1 network calls.
    short = copy.deepcopy(config)
    short.sampling.method, short.sampling.num_steps = "edm", max(sample_levels, 2)
    n_steps = 2 * short.sampling.num_steps - 1
    sample_fn = generate.jit_sample_fn(
        generate.sample_fn_of(build.build(short, "sample"), batch_sharding=data), mesh)
  else:
    # Annealed Langevin over the first `sample_levels` levels: its cost is linear in
    # levels x steps, so a few levels give the rate of the whole run.
    levels = min(sample_levels, config.model.num_classes)
    n_steps = levels * config.sampling.n_steps_each
    sample_fn = generate.jit_sample_fn(generate.sample_fn_of(
        built, batch_sharding=data, num_levels=levels), mesh)
  t0 = time.perf_counter()
  sample_compiled = sample_fn.lower(state.params, key, 0).compile()
  sample_compile = time.perf_counter() - t0
  times = []
  for r in range(repeats + 1):
    _, dt = _timed(sample_compiled, state.params, jax.random.fold_in(key, r), 0)
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


def topology_mesh(name: str):
  """A 1-D 'data' mesh over the chips of a TPU topology (jax.experimental.topologies), for
  ahead-of-time compilation: the chips need not be attached, libtpu must be installed."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    devices = topologies.get_topology_desc(topology_name=name, platform="tpu").devices
  except (RuntimeError, ValueError) as e:  # libtpu missing, or a name it does not know
    raise ValueError(f"--topology={name!r}: no TPU topology of that name could be made "
                     f"(is libtpu installed? `pip install libtpu`): {e}") from e
  return sharding.data_mesh(devices)


MIB = 2 ** 20


def train_memory(config, mesh, report=lambda record: None,
                 dtypes=("float32", "bfloat16")) -> list:
  """The compiled train step's memory per device (MiB) for each of `dtypes` and remat off /
  on: records {dtype, remat, arguments, outputs, aliased, temporaries, total}
  with total = arguments + outputs - aliased + temporaries (the donated old state is
  aliased to the new one). Only compiles: works on a topology_mesh. `report` gets each
  record as soon as it is measured (a 256 px model takes minutes per compile)."""
  b, size, ch = config.training.batch_size, config.data.image_size, config.data.channels
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  batch = {"image": jax.ShapeDtypeStruct((b, size, size, ch), jnp.float32, sharding=data),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32, sharding=data)}
  key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, P()))
  records = []
  for dtype in dtypes:
    for remat in (False, True):
      c = copy.deepcopy(config)
      c.model.dtype, c.model.remat = dtype, remat
      built = build.build(c, n_devices=mesh.devices.size)
      abstract = state_lib.abstract_state(built, mesh)
      step = train.jit_train_step(train.train_step_of(built), mesh)
      m = step.lower(abstract, batch, key).compile().memory_analysis()
      r = {"dtype": dtype, "remat": remat, "arguments": m.argument_size_in_bytes / MIB,
           "outputs": m.output_size_in_bytes / MIB, "aliased": m.alias_size_in_bytes / MIB,
           "temporaries": m.temp_size_in_bytes / MIB}
      r["total"] = r["arguments"] + r["outputs"] - r["aliased"] + r["temporaries"]
      records.append(r)
      report(r)
  return records


def format_memory(records: list, where: str) -> str:
  base = records[0]["total"]
  rows = [f"train step memory per device (MiB), {where}",
          f"{'dtype':<9} {'remat':<5} {'arguments':>10} {'outputs':>9} {'aliased':>9} "
          f"{'temporaries':>11} {'total':>9} {'vs row 1':>8}"]
  rows += [f"{r['dtype']:<9} {str(r['remat']):<5} {r['arguments']:>10.1f} {r['outputs']:>9.1f} "
           f"{r['aliased']:>9.1f} {r['temporaries']:>11.1f} {r['total']:>9.1f} "
           f"{r['total'] / base:>8.2f}" for r in records]
  return "\n".join(rows)


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
    it = iter(data.make_train_dataset(build.build(c).data))
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


# ---- side by side with the official NCSNv2 code -----------------------------------------

SHAPE_FORMS = ("ncsnv2_cifar10_ngf<N>_b<B>, ddpm_cifar10_b<B>, ddpm_cifar10_dpmpp_b<B>, "
               "edm_cifar10_ddpmpp_b<B> or edm_cifar10_adm_mc<C>_b<B>")


def parse_shape(name: str) -> dict:
  """'ncsnv2_cifar10_ngf32_b16' -> {'model': 'ncsnv2', 'ngf': 32, 'batch': 16};
  'ddpm_cifar10_b8' -> {'model': 'ddpm', 'batch': 8} (DDPM's CIFAR-10 U-Net, 35.7M)."""
  m = re.fullmatch(r"ncsnv2_cifar10_ngf(\d+)_b(\d+)", name)
  if m:
    return {"model": "ncsnv2", "ngf": int(m[1]), "batch": int(m[2])}
  m = re.fullmatch(r"ddpm_cifar10_b(\d+)", name)
  if m:
    return {"model": "ddpm", "batch": int(m[1])}
  m = re.fullmatch(r"ddpm_cifar10_dpmpp_b(\d+)", name)
  if m:  # sampling only: the whole DPM-Solver++ 2M run of `steps` steps
    return {"model": "ddpm", "sampler": "dpmpp_2m", "batch": int(m[1])}
  m = re.fullmatch(r"edm_cifar10_ddpmpp_b(\d+)", name)
  if m:
    return {"model": "edm", "arch": "ddpmpp", "batch": int(m[1])}
  m = re.fullmatch(r"edm_cifar10_adm_mc(\d+)_b(\d+)", name)
  if m:
    return {"model": "edm", "arch": "adm", "model_channels": int(m[1]), "batch": int(m[2])}
  raise ValueError(f"--shapes entry {name!r}; expected {SHAPE_FORMS}, e.g. "
                   "ncsnv2_cifar10_ngf32_b16.")


def shape_config(shape: dict):
  from configs import ddpm_cifar10, default, edm_cifar10_ddpmpp, ncsnv2_cifar10  # pylint: disable=g-import-not-at-top
  if shape["model"] == "edm":
    # EDM's CIFAR-10 settings (config F for DDPM++; ADM as on ImageNet, at 32 px and
    # unconditional). No augmentation on either side: the official pipe is its training
    # loop's, not the network's, and augment_p 0 leaves the 9 augment labels out of both.
    if shape["arch"] == "ddpmpp":
      c = edm_cifar10_ddpmpp.get_config().unlock()
      c.model.augment_p = 0.0
    else:
      c = default.get_edm_config("CIFAR10", 32, "adm", batch_size=4096, duration_mimg=2500,
                                 lr=1e-4, ema_mimg=50, dropout=0.10, augment_p=0.0)
      c.model.model_channels = shape["model_channels"]
    c.sampling.S_churn = 0.0  # EDM's deterministic CIFAR-10 sampler
    c.training.batch_size = c.sampling.batch_size = shape["batch"]
    return c
  c = (ddpm_cifar10 if shape["model"] == "ddpm" else ncsnv2_cifar10).get_config()
  if shape["model"] == "ncsnv2":
    c.model.ngf = shape["ngf"]
  c.training.batch_size = c.sampling.batch_size = shape["batch"]
  return c


def _our_program(shape: dict, job: str, steps: int):
  """(config, mesh, jitted fn, its arguments, steps it makes) of our train step (arguments:
  a fresh TrainState, a batch, a key) or sampler chain of about `steps` steps (arguments:
  the network's parameters alone, as a sampling run restores them, a key, 0)."""
  config = shape_config(shape)
  mesh = sharding.data_mesh()
  key = jax.random.PRNGKey(0)
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  if job == "train":
    built = build.build(config)
    b, size = shape["batch"], config.data.image_size
    batch = jax.device_put(np.random.default_rng(0).random((b, size, size, 3), np.float32), data)
    fn = train.jit_train_step(train.train_step_of(built), mesh)
    return config, mesh, fn, (state_lib.fresh_state(built, mesh), batch, key), steps
  num_levels = None
  with config.unlocked():
    if shape["model"] == "edm":
      # `steps` steps of EDM's Heun sampler: 2 steps - 1 network calls, as the official one.
      config.sampling.num_steps = steps
    elif shape.get("sampler") == "dpmpp_2m":
      # DPM-Solver++ 2M over `steps` of the network's own timesteps with the spacing and the
      # lower-order final step of diffusers' DPMSolverMultistepScheduler defaults.
      config.sampling.method, config.sampling.num_steps = "dpmpp_2m", steps
      config.sampling.schedule, config.sampling.lower_order_final = "linspace", True
    elif shape["model"] == "ddpm":
      # `steps` ancestral steps: the same network on a schedule of that length.
      config.diffusion.num_timesteps, config.sampling.progressive_ts = steps, ()
    else:
      # `steps` Langevin steps as whole levels of n_steps_each.
      num_levels = max(1, steps // config.sampling.n_steps_each)
      steps = num_levels * config.sampling.n_steps_each
      config.sampling.denoise = False
  built = build.build(config, "sample")
  fn = generate.jit_sample_fn(
      generate.sample_fn_of(built, batch_sharding=data, num_levels=num_levels), mesh)
  return config, mesh, fn, (state_lib.fresh_params(built, mesh), key, 0), steps


def measure_compile(shape: dict, job: str, steps: int) -> dict:
  """Seconds to compile (or, with a warm persistent cache, to load) our train step or
  sampler program: the `compile_s` of the same program `measure_ours` times."""
  *_, fn, args, _ = _our_program(shape, job, steps)
  t0 = time.perf_counter()
  fn.lower(*args).compile()
  return {"compile_s": time.perf_counter() - t0}


def measure_ours(shape: dict, job: str, steps: int) -> dict:
  """Our train step (loss, Adam, EMA) or sampler chain, on this process's devices, compiled
  as `main.py` compiles them."""
  config, mesh, fn, args, steps = _our_program(shape, job, steps)
  t0 = time.perf_counter()
  compiled = host.compile_then_release(fn, *args)
  compile_s = time.perf_counter() - t0
  if job == "train":
    state, batch, key = args
    state, m = compiled(state, batch, key)
    jax.block_until_ready(m)
    start = _start()
    for _ in range(steps):
      state, m = compiled(state, batch, key)
    jax.block_until_ready(m)
    return {**_rates(steps, start), "compile_s": compile_s,
            "gflop_per_step": program_gflop(compiled)}
  params, key, _ = args
  jax.block_until_ready(compiled(params, key, 0))
  start = _start()
  jax.block_until_ready(compiled(params, jax.random.fold_in(key, 1), 0))
  result = {**_rates(steps, start), "compile_s": compile_s}
  if shape["model"] == "ncsnv2":
    result.update(sampler_compile_by_levels(config, mesh, params))
  return result


def program_gflop(compiled) -> float:
  """GFLOP of one run of a compiled program, by XLA's own count (`cost_analysis`: a
  multiply-add is 2; convolutions and dots make nearly all of it). Counted for straight-line
  programs (a train step); a loop's body is counted once, so not for samplers."""
  return float(summary.xla_cost(compiled)["flops"]) / 1e9


# The probe: the layer most of the ngf-128 RefineNet is made of (32 of its 75 convolutions).
PROBE_CONV = {"batch": 8, "size": 16, "channels": 256}


def conv_gflops(impl: str, repeats: int = 30) -> float:
  """GFLOP/s of one 3x3 convolution forward (PROBE_CONV, float32, 'same' padding), best of
  `repeats`: XLA with our compiler options ('ours') or torch's conv2d ('official'): the
  rate each side's convolution kernels reach on this CPU, to read the train steps' rates
  against."""
  b, n, c = PROBE_CONV["batch"], PROBE_CONV["size"], PROBE_CONV["channels"]
  rng = np.random.default_rng(0)
  x = rng.random((b, n, n, c), np.float32)
  k = rng.random((3, 3, c, c), np.float32) / (9 * c)
  if impl == "ours":
    mesh = sharding.data_mesh(jax.devices()[:1])
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
                   compiler_options=sharding.compiler_options(mesh))
    x, k = jnp.asarray(x), jnp.asarray(k)
    run = lambda: jax.block_until_ready(conv(x, k))
  else:
    import torch  # pylint: disable=g-import-not-at-top
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    k = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())

    def run():
      with torch.no_grad():
        torch.nn.functional.conv2d(x, k, padding=1)
  for _ in range(3):  # oneDNN builds and caches its kernel over the first calls
    run()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t0)
  return 2 * b * n * n * 9 * c * c / best / 1e9


# NCSNv2's extremes: 10 levels (a short test run) and 2,311 (its FFHQ and LSUN configs).
COMPILE_LEVELS = (10, 2311)


def sampler_compile_by_levels(config, mesh, params) -> dict:
  """Seconds to compile the whole annealed Langevin sampler (with the final denoising step)
  at each L of COMPILE_LEVELS: flat, since levels and steps are lax.scan loops."""
  data = NamedSharding(mesh, P(sharding.DATA_AXIS))
  out = {}
  for levels in COMPILE_LEVELS:
    c = copy.deepcopy(config)
    with c.unlocked():
      c.model.num_classes, c.sampling.denoise = levels, True
    fn = generate.jit_sample_fn(generate.sample_fn_of(build.build(c, "sample"),
                                                      batch_sharding=data), mesh)
    t0 = time.perf_counter()
    fn.lower(params, jax.random.PRNGKey(0), 0).compile()
    out[f"compile_s_L{levels}"] = time.perf_counter() - t0
  return out


def measure_official(path: str, shape: dict, job: str, steps: int) -> dict:
  """The official code's own pieces: NCSNv2, anneal_dsm_score_estimation, its Adam and
  EMAHelper for a train step (as runners/ncsn_runner.py does it), anneal_Langevin_dynamics
  for sampling; float32 on the CPU."""
  import types  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.abspath(path))
  from losses import get_optimizer  # pylint: disable=g-import-not-at-top
  from losses.dsm import anneal_dsm_score_estimation  # pylint: disable=g-import-not-at-top
  from models import anneal_Langevin_dynamics, get_sigmas  # pylint: disable=g-import-not-at-top
  from models.ema import EMAHelper  # pylint: disable=g-import-not-at-top
  from models.ncsnv2 import NCSNv2  # pylint: disable=g-import-not-at-top
  ours = shape_config(shape)
  ns = lambda **kw: types.SimpleNamespace(**kw)
  config = ns(
      device=torch.device("cpu"),
      data=ns(image_size=32, channels=3, logit_transform=False, rescaled=False),
      model=ns(ngf=shape["ngf"], num_classes=ours.model.num_classes, sigma_dist="geometric",
               sigma_begin=ours.model.sigma_begin, sigma_end=ours.model.sigma_end,
               normalization="InstanceNorm++", nonlinearity="elu", ema_rate=0.999),
      optim=ns(optimizer="Adam", lr=ours.optim.lr, weight_decay=0.0, beta1=0.9,
               amsgrad=False, eps=1e-8))
  torch.manual_seed(0)
  score = NCSNv2(config)
  sigmas = get_sigmas(config)
  x = torch.rand(shape["batch"], 3, 32, 32)
  if job == "train":
    optimizer = get_optimizer(config, score.parameters())
    ema = EMAHelper(mu=config.model.ema_rate)
    ema.register(score)

    def step():
      loss = anneal_dsm_score_estimation(score, x, sigmas, None, 2.0)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      ema.update(score)
    step()
    start = _start()
    for _ in range(steps):
      step()
    return _rates(steps, start)
  levels = max(1, steps // ours.sampling.n_steps_each)
  run = lambda: anneal_Langevin_dynamics(x, score, sigmas[:levels], ours.sampling.n_steps_each,
                                         ours.sampling.step_lr, final_only=True, denoise=False)
  run()
  start = _start()
  run()
  return _rates(levels * ours.sampling.n_steps_each, start)


def measure_official_edm(path: str, shape: dict, job: str, steps: int) -> dict:
  """NVlabs/edm as a library: training/networks.py's EDMPrecond around its SongUNet (DDPM++
  preset of its train.py) or DhariwalUNet, training/loss.py's EDMLoss, Adam and the EMA
  update of its training loop for a train step; generate.py's edm_sampler (S_churn 0) for
  sampling. float32 on the CPU, the same sizes and dropout as ours."""
  import copy as copy_lib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.abspath(path))
  from training import networks  # pylint: disable=g-import-not-at-top
  from training.loss import EDMLoss  # pylint: disable=g-import-not-at-top
  ours = shape_config(shape)
  m = ours.model
  kwargs = dict(model_type=m.arch, model_channels=m.model_channels,
                channel_mult=list(m.channel_mult), num_blocks=m.num_blocks,
                attn_resolutions=list(m.attn_resolutions), dropout=m.dropout)
  if m.arch == "SongUNet":
    kwargs.update(embedding_type=m.embedding_type, encoder_type=m.encoder_type,
                  decoder_type=m.decoder_type, channel_mult_noise=m.channel_mult_noise,
                  resample_filter=list(m.resample_filter))
  torch.manual_seed(0)
  net = networks.EDMPrecond(img_resolution=32, img_channels=3, label_dim=0,
                            sigma_data=m.sigma_data, **kwargs)
  b = shape["batch"]
  x = torch.rand(b, 3, 32, 32) * 2 - 1
  if job == "train":
    net.train()
    ema = copy_lib.deepcopy(net).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(net.parameters(), lr=ours.optim.lr, betas=(0.9, 0.999),
                                 eps=1e-8)
    loss_fn = EDMLoss(P_mean=m.P_mean, P_std=m.P_std, sigma_data=m.sigma_data)

    def step():
      optimizer.zero_grad(set_to_none=True)
      loss_fn(net=net, images=x).sum().mul(1.0 / b).backward()
      optimizer.step()
      with torch.no_grad():
        for p_ema, p_net in zip(ema.parameters(), net.parameters()):
          p_ema.copy_(p_net.detach().lerp(p_ema, 0.999))
  else:
    from generate import edm_sampler  # pylint: disable=g-import-not-at-top
    net.eval()

    @torch.no_grad()
    def step():
      edm_sampler(net, torch.randn_like(x), num_steps=steps, S_churn=0)
  step()
  start = _start()
  for _ in range(steps if job == "train" else 1):
    step()
  return _rates(steps, start)


def measure_diffusers(shape: dict, job: str, steps: int) -> dict:
  """diffusers' UNet2DModel of DDPM's CIFAR-10 size (google/ddpm-cifar10-32's config, one
  attention head as the original and our config) as its train_unconditional.py example
  trains it: epsilon MSE at a random t, Adam, gradient clipping at norm 1, EMAModel; sampling
  is DDPMScheduler.step after each network call. float32 on the CPU."""
  import inspect  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import DDPMScheduler, UNet2DModel  # pylint: disable=g-import-not-at-top
  from diffusers.training_utils import EMAModel  # pylint: disable=g-import-not-at-top
  from score_jax.importers import diffusers_unet  # pylint: disable=g-import-not-at-top
  ours = shape_config(shape)
  accepted = inspect.signature(UNet2DModel.__init__).parameters
  cfg = {k: v for k, v in dict(diffusers_unet.UNET2D_DEFAULTS,
                               **diffusers_unet.GOOGLE_DDPM_CIFAR10).items() if k in accepted}
  cfg.update(attention_head_dim=max(ours.model.ch * m for m in ours.model.ch_mult),
             dropout=ours.model.dropout)
  torch.manual_seed(0)
  unet = UNet2DModel(**cfg)
  scheduler = DDPMScheduler(num_train_timesteps=ours.diffusion.num_timesteps,
                            beta_schedule="linear")
  b = shape["batch"]
  x = torch.rand(b, 3, 32, 32) * 2 - 1
  if job == "train":
    unet.train()
    optimizer = torch.optim.Adam(unet.parameters(), lr=ours.optim.lr)
    ema = EMAModel(unet.parameters(), decay=ours.model.ema_rate)

    def step():
      noise = torch.randn_like(x)
      t = torch.randint(0, scheduler.config.num_train_timesteps, (b,))
      eps = unet(scheduler.add_noise(x, noise, t), t).sample
      loss = torch.nn.functional.mse_loss(eps, noise)
      optimizer.zero_grad()
      loss.backward()
      torch.nn.utils.clip_grad_norm_(unet.parameters(), ours.optim.grad_clip)
      optimizer.step()
      ema.step(unet.parameters())
  elif shape.get("sampler") == "dpmpp_2m":
    from diffusers import DPMSolverMultistepScheduler  # pylint: disable=g-import-not-at-top
    unet.eval()
    solver = DPMSolverMultistepScheduler(num_train_timesteps=ours.diffusion.num_timesteps,
                                         beta_schedule="linear", solver_order=2,
                                         algorithm_type="dpmsolver++")

    @torch.no_grad()
    def step():
      solver.set_timesteps(steps)
      y = torch.randn_like(x)
      for t in solver.timesteps:
        y = solver.step(unet(y, t).sample, t, y).prev_sample
  else:
    unet.eval()
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    ts = scheduler.timesteps[:steps]

    @torch.no_grad()
    def step():
      y = torch.randn_like(x)
      for t in ts:
        y = scheduler.step(unet(y, t).sample, t, y).prev_sample
  step()
  start = _start()
  for _ in range(steps if job == "train" else 1):
    step()
  return _rates(steps, start)


def run_child(spec: dict) -> dict:
  """One measurement in a fresh process, so that its peak memory is its own. Ours and the
  official code's run with the same environment: malloc's huge-page setting
  (`score_jax.host.malloc_env`) is given to both."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child=" + json.dumps(spec)],
                       capture_output=True, text=True, env=host.malloc_env())
  if out.returncode:
    raise RuntimeError(f"measurement {spec} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(spec: dict) -> None:
  import json  # pylint: disable=g-import-not-at-top
  import resource  # pylint: disable=g-import-not-at-top
  if spec["impl"] != "ours":
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(spec["threads"] or os.cpu_count())
  if spec.get("cache"):
    # Its own cache, whatever the environment says (the test suite sets one): the first
    # child to use it compiles cold, the next loads what that one stored.
    host.use_compilation_cache(spec["cache"], min_compile_secs=0.0, over_environment=True)
  if spec["job"] == "conv":
    r = {"conv_gflops": conv_gflops(spec["impl"])}
  elif spec.get("compile_only"):
    r = measure_compile(parse_shape(spec["shape"]), spec["job"], spec["steps"])
  elif spec["impl"] == "ours":
    r = measure_ours(parse_shape(spec["shape"]), spec["job"], spec["steps"])
  else:
    shape = parse_shape(spec["shape"])
    if shape["model"] == "edm":
      r = measure_official_edm(spec["official_edm"], shape, spec["job"], spec["steps"])
    elif shape["model"] == "ddpm":
      r = measure_diffusers(shape, spec["job"], spec["steps"])
    else:
      r = measure_official(spec["official"], shape, spec["job"], spec["steps"])
  r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps(r))


def official_of(name: str, official: str | None, official_edm: str | None = None
                ) -> str | None:
  """What a shape is measured against: the NCSNv2 checkout `official` (when given), the
  NVlabs/edm checkout `official_edm` (when given), or diffusers (when installed); None:
  ours only."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  model = parse_shape(name)["model"]
  if model == "edm":
    return "NVlabs/edm" if official_edm else None
  if model == "ddpm":
    return "diffusers" if importlib.util.find_spec("diffusers") is not None else None
  return "ermongroup/ncsnv2" if official else None


# The few-step comparison: DPM-Solver++ 2M in 20 steps (one network call each).
FEW_STEP_SAMPLER_STEPS = 20


def warm_start(name: str, job: str, steps: int, threads: int) -> dict:
  """{compile_cold_s, compile_warm_s}: our program compiled by a process with an empty
  persistent compilation cache, then by a second process on the cache the first one left
  (what a second `main.py --mode=sample` of the same workdir pays)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as cache:
    spec = {"impl": "ours", "shape": name, "job": job, "steps": steps, "threads": threads,
            "cache": cache, "compile_only": True}
    cold = run_child(spec)["compile_s"]
    warm = run_child(spec)["compile_s"]
  return {"compile_cold_s": cold, "compile_warm_s": warm}


def side_by_side(shapes, official, rounds: int, threads: int, train_steps: int,
                 sample_steps: int, warm: bool = True, official_edm: str | None = None,
                 on_record=lambda records: None) -> list:
  """Records {name, job, ours_steps_per_s, official_steps_per_s, ratio, official, ours_compile_s,
  ours_peak_rss_mb, official_peak_rss_mb, ours/official_faults_per_step (minor page faults),
  ours/official_kernel_s_per_step, and with `warm` compile_cold_s and compile_warm_s, ours
  compiled with an empty and then a filled persistent cache) (NCSNv2 sampling also
  ours_compile_s_L10 and _L2311;
  training also gflop_per_step, ours/official_gflops, the rate that makes, and
  ours/official_conv_gflops, the rate of one PROBE_CONV forward in XLA and in torch,
  measured once): ours and theirs alternate, best of `rounds` (by steps/s)."""
  for name in shapes:
    parse_shape(name)
  against_any = any(official_of(name, official, official_edm) for name in shapes)
  probe = {impl: run_child({"impl": impl, "job": "conv", "threads": threads})["conv_gflops"]
           for impl in (("ours", "official") if against_any else ("ours",))}
  records = []
  for name in shapes:
    against = official_of(name, official, official_edm)
    shape = parse_shape(name)
    jobs = [("train", train_steps), ("sample", sample_steps)]
    if shape.get("sampler"):  # a few-step sampler's whole run; its training is the plain row's
      jobs = [("sample", FEW_STEP_SAMPLER_STEPS)]
    elif shape["model"] == "edm":  # Heun steps: 2 network calls each
      jobs = [("train", train_steps), ("sample", max(2, sample_steps // 4))]
    for job, steps in jobs:
      best = {"ours": None, "official": None}
      for _ in range(rounds):
        for impl in (("ours", "official") if against else ("ours",)):
          r = run_child({"impl": impl, "shape": name, "job": job, "steps": steps,
                         "threads": threads, "official": official,
                         "official_edm": official_edm})
          if best[impl] is None or r["steps_per_s"] > best[impl]["steps_per_s"]:
            best[impl] = r
      o, t = best["ours"], best["official"]
      records.append({
          "name": name, "job": job,
          "ours_steps_per_s": o["steps_per_s"],
          "official_steps_per_s": t["steps_per_s"] if t else None,
          "ratio": o["steps_per_s"] / t["steps_per_s"] if t else None,
          "official": against,
          "ours_compile_s": o["compile_s"],
          "ours_peak_rss_mb": o["peak_rss_mb"],
          "official_peak_rss_mb": t["peak_rss_mb"] if t else None,
          "ours_faults_per_step": o["faults_per_step"],
          "official_faults_per_step": t["faults_per_step"] if t else None,
          "ours_kernel_s_per_step": o["kernel_s_per_step"],
          "official_kernel_s_per_step": t["kernel_s_per_step"] if t else None,
          **{f"ours_{k}": v for k, v in o.items() if k.startswith("compile_s_L")},
          **(warm_start(name, job, steps, threads) if warm else {}),
      })
      if shape.get("sampler"):  # one step-loop per image batch: whole-run images/s
        per_run = shape["batch"] / steps
        records[-1].update(ours_images_per_s=o["steps_per_s"] * per_run,
                           official_images_per_s=t["steps_per_s"] * per_run if t else None)
      if job == "train":
        # The same network and loss on both sides, so XLA's count of ours is theirs too.
        gflop = o["gflop_per_step"]
        records[-1].update({
            "gflop_per_step": gflop,
            "ours_gflops": gflop * o["steps_per_s"],
            "official_gflops": gflop * t["steps_per_s"] if t else None,
            "ours_conv_gflops": probe["ours"],
            "official_conv_gflops": probe.get("official") if t else None})
      on_record(records)
  return records


def format_records(records: list) -> str:
  head = (f"{'shape':<26} {'job':<6} {'ours/s':>8} {'official/s':>10} {'ratio':>6} "
          f"{'compile s':>9} {'ours MB':>8} {'official MB':>11}  against")
  fmt = lambda v, spec: "-" if v is None else format(v, spec)
  rows = [head] + [
      f"{r['name']:<26} {r['job']:<6} {r['ours_steps_per_s']:>8.3f} "
      f"{fmt(r['official_steps_per_s'], '>10.3f')} {fmt(r['ratio'], '>6.2f')} "
      f"{r['ours_compile_s']:>9.1f} {r['ours_peak_rss_mb']:>8.0f} "
      f"{fmt(r['official_peak_rss_mb'], '>11.0f')}  {r.get('official') or '-'}"
      for r in records]
  for r in records:
    if r.get("ours_faults_per_step") is not None:
      rows.append(
          f"{r['name']} {r['job']}: minor page faults / kernel CPU s per step, ours "
          f"{r['ours_faults_per_step']:.0f} / {r['ours_kernel_s_per_step']:.3f}, official "
          f"{fmt(r['official_faults_per_step'], '.0f')} / "
          f"{fmt(r['official_kernel_s_per_step'], '.3f')}")
  b, n, c = PROBE_CONV["batch"], PROBE_CONV["size"], PROBE_CONV["channels"]
  for r in records:
    if r.get("gflop_per_step") is not None:
      rows.append(
          f"{r['name']} {r['job']}: {r['gflop_per_step']:.1f} GFLOP per step (XLA's count), "
          f"ours {r['ours_gflops']:.0f} GFLOP/s, official {fmt(r['official_gflops'], '.0f')}; "
          f"one 3x3 conv {c}->{c} at {n}x{n}, batch {b}, forward: XLA "
          f"{r['ours_conv_gflops']:.0f}, torch {fmt(r['official_conv_gflops'], '.0f')} GFLOP/s")
  for r in records:
    levels = [k for k in r if k.startswith("ours_compile_s_L")]
    if levels:
      rows.append(f"{r['name']}: whole Langevin sampler compile, " + ", ".join(
          f"L = {k[len('ours_compile_s_L'):]}: {r[k]:.1f} s" for k in levels))
  for r in records:
    if r.get("compile_cold_s") is not None:
      rows.append(f"{r['name']} {r['job']}: compile with an empty persistent cache "
                  f"{r['compile_cold_s']:.1f} s, with the cache it left "
                  f"{r['compile_warm_s']:.1f} s ({r['compile_warm_s'] / r['compile_cold_s']:.2f})")
  return "\n".join(rows)


def main(argv):
  del argv
  import json  # pylint: disable=g-import-not-at-top
  if FLAGS.child:
    child_main(json.loads(FLAGS.child))
    return
  official_edm = FLAGS["official-edm"].value
  if FLAGS.official or official_edm or FLAGS.json:
    if FLAGS.official and not os.path.isfile(os.path.join(FLAGS.official, "models",
                                                          "ncsnv2.py")):
      raise app.UsageError(f"--official={FLAGS.official}: no models/ncsnv2.py there; expected "
                           "a checkout of github.com/ermongroup/ncsnv2.")
    if official_edm and not all(os.path.isfile(os.path.join(official_edm, *f)) for f in
                                (("training", "networks.py"), ("generate.py",))):
      raise app.UsageError(f"--official-edm={official_edm}: no training/networks.py and "
                           "generate.py there; expected a checkout of github.com/NVlabs/edm.")
    for name in FLAGS.shapes:
      parse_shape(name)  # a bad name fails before the first hour of measuring
    def keep(records):
      # Rewritten after every record: a later measurement that fails (a missing package on
      # the official side) loses none of the hour of records before it.
      if FLAGS.json:
        with open(FLAGS.json, "w") as f:
          json.dump(records, f, indent=1)

    records = side_by_side(FLAGS.shapes, FLAGS.official, FLAGS.rounds, FLAGS.threads,
                           FLAGS.train_steps, FLAGS.sample_levels * 5, FLAGS.warm_start,
                           official_edm, keep)
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} cores")
    print(format_records(records))
    if FLAGS.json:
      with open(FLAGS.json, "w") as f:
        json.dump(records, f, indent=1)
    return
  if FLAGS.config is None:
    raise app.UsageError("--config is required (or --official / --json for the side-by-side "
                         "table).")
  if FLAGS.memory:
    mesh = topology_mesh(FLAGS.topology) if FLAGS.topology else sharding.data_mesh()
    d = mesh.devices.flat[0]
    where = (f"{FLAGS.config.data.dataset} {FLAGS.config.data.image_size}px, global batch "
             f"{FLAGS.config.training.batch_size} over {mesh.devices.size} x "
             f"{getattr(d, 'device_kind', d.platform)}")
    report = lambda r: print(f"measured: {r}", flush=True)
    print(format_memory(train_memory(FLAGS.config, mesh, report, FLAGS.memory_dtypes), where))
    return
  if FLAGS.topology:
    raise app.UsageError("--topology is for --memory (nothing can run on it).")
  results = benchmark(FLAGS.config, FLAGS.train_steps, FLAGS.sample_levels, FLAGS.repeats)
  if FLAGS.data_size:
    for fmt in ("jpeg", "png"):
      results[f"input pipeline {FLAGS.data_size}px {fmt} images/s"] = data_throughput(
          fmt, FLAGS.data_size)
  print(format_table(results))


if __name__ == "__main__":
  app.run(main)
