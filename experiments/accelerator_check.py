"""The one script to run when an accelerator is lent: what it is, how fast the 32 px models
train and sample on it in float32 and bfloat16, how much device memory they take, and
whether the MNIST main job trains there. Writes one JSON.

  python experiments/accelerator_check.py --json=accelerator_check.json     # GPU / TPU
  python experiments/accelerator_check.py --json=/tmp/check.json            # CPU: reduced

Rows (each in its own child process, so that each peak device memory is that row's own):
the CIFAR-10 networks at 32 px of NCSNv2 (its config's ngf 128), DDPM (35.7 M) and EDM's DDPM++
(55.7 M), at `--batch`, in float32 then bfloat16 compute (`model.dtype`), each with its train
step (loss, Adam, EMA) and its own sampler (`experiments/benchmark.py`'s `benchmark`: steps/s,
images/s, compile seconds) and `peak_device_mb` (the device allocator's peak; null where the
backend keeps none, as XLA:CPU). Rows start while under `--budget_s` seconds have passed,
so that the whole check stays within 5 minutes on one GPU; a row left out is listed in
`skipped`. Then 200 steps (`--main_steps`) of `configs/ncsnv2_mnist.py`, the main job, with
its first and last logged loss. `--reduced` shrinks every network to a few channels and
every run to a few steps: the form the test suite runs on CPU, so this script does not rot.
Left unset, it is on where JAX's devices are CPUs (the full rows are GPU-sized work) and off
on GPU and TPU; the JSON's `reduced` says which ran. A row that fails is kept in
the JSON with its error, the other rows still run, and the exit status is then 1.
docs/devices.md says how to run it on a GPU machine and on a TPU VM.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jaxlib
from absl import app, flags

ROWS = [(model, dtype) for dtype in ("float32", "bfloat16")
        for model in ("edm_cifar10_ddpmpp", "ddpm_cifar10", "ncsnv2_cifar10")]

FLAGS = flags.FLAGS
# One row in a fresh process, so that its peak device memory is its own.
_ROW_CHILD = ("import json, sys; from experiments.accelerator_check import run_row; "
              "print('ROW ' + json.dumps(run_row(json.loads(sys.argv[1]))), flush=True)")


def _define_flags():
  # Defined only when this file is the program: a row's child imports this module beside
  # experiments/benchmark.py, whose own flags (its --json among them) must not collide.
  flags.DEFINE_string("json", "accelerator_check.json", "The JSON written.")
  flags.DEFINE_bool("reduced", None, "Tiny networks and few steps (the CPU test form); "
                    "unset: on where the devices are CPUs.")
  flags.DEFINE_integer("batch", 16, "Train and sample batch of the 32 px rows.")
  flags.DEFINE_integer("main_steps", 200, "Steps of the MNIST main job.")
  flags.DEFINE_float("budget_s", 240.0, "No row starts after this many seconds.")
  flags.DEFINE_list("models", [m for m, _ in ROWS[:3]], "Which of the 32 px networks.")
  flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Which compute dtypes.")


def device_facts() -> dict:
  d = jax.devices()[0]
  stats = d.memory_stats() or {}
  return {"platform": d.platform, "device_kind": d.device_kind,
          "device_count": jax.device_count(), "process_count": jax.process_count(),
          "memory_mb": stats.get("bytes_limit", 0) / 2**20 or None,
          "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def row_config(model: str, dtype: str, batch: int, reduced: bool):
  import importlib
  c = importlib.import_module(f"configs.{model}").get_config()
  with c.unlocked():
    c.model.dtype = dtype
    c.training.batch_size = c.sampling.batch_size = batch
    if reduced:
      m = c.model
      if c.model.name == "ncsnv2":
        m.ngf = 8
      elif c.model.name == "ddpm":
        m.ch, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2), 1, (16,)
        m.num_groups = 8
      else:
        m.model_channels, m.channel_mult, m.num_blocks = 16, (1, 2), 1
        m.attn_resolutions = (16,)
  return c


def run_row(spec: dict) -> dict:
  from experiments import benchmark  # its flags are defined once, in this child
  c = row_config(spec["model"], spec["dtype"], spec["batch"], spec["reduced"])
  steps, levels = (2, 2) if spec["reduced"] else (20, 4)
  record = benchmark.benchmark(c, train_steps=steps, sample_levels=levels, repeats=1)
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return {"model": spec["model"], "dtype": spec["dtype"],
          "peak_device_mb": None if peak is None else peak / 2**20, **record}


def main_job(steps: int, reduced: bool) -> dict:
  """`steps` steps of the main job's config in a fresh workdir: (first, last) logged loss."""
  from configs import ncsnv2_mnist
  from score_jax import build, train
  c = ncsnv2_mnist.get_config()
  with c.unlocked():
    c.training.n_iters, c.training.snapshot_freq = steps, steps
    c.training.log_freq = max(1, steps // 10)
    c.optim.warmup = min(c.optim.warmup, steps // 2)
    c.training.snapshot_sampling = False
    c.eval.after_training = False
    if reduced:
      c.model.ngf, c.training.batch_size = 8, 8
  with tempfile.TemporaryDirectory() as wd:
    t0 = time.perf_counter()
    train.train_and_evaluate(build.build(c), wd)
    seconds = time.perf_counter() - t0
    with open(os.path.join(wd, "metrics.jsonl")) as f:
      losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
  return {"config": "ncsnv2_mnist", "steps": steps, "seconds": seconds,
          "first_loss": losses[0], "last_loss": losses[-1]}


def main(argv):
  del argv
  t0 = time.perf_counter()
  reduced = FLAGS.reduced
  if reduced is None:
    reduced = jax.devices()[0].platform == "cpu"
    print(f"--reduced unset: {'reduced' if reduced else 'full'} rows on "
          f"{jax.devices()[0].platform}", flush=True)
  result = {"devices": device_facts(), "reduced": reduced, "rows": [], "skipped": []}
  batch = 2 if reduced else FLAGS.batch
  for model, dtype in ROWS:
    if model not in FLAGS.models or dtype not in FLAGS.dtypes:
      continue
    if time.perf_counter() - t0 > FLAGS.budget_s:
      result["skipped"].append(f"{model} {dtype}")
      continue
    spec = json.dumps(dict(model=model, dtype=dtype, batch=batch, reduced=reduced))
    out = subprocess.run([sys.executable, "-c", _ROW_CHILD, spec], capture_output=True,
                         text=True, check=False, cwd=_ROOT)
    lines = [l for l in out.stdout.splitlines() if l.startswith("ROW ")]
    if out.returncode or not lines:
      # One failing row must not hide the others: its error goes in the JSON.
      result["rows"].append({"model": model, "dtype": dtype, "error": out.stderr[-2000:]})
    else:
      result["rows"].append(json.loads(lines[-1][4:]))
    print(json.dumps(result["rows"][-1])[:300], flush=True)
  result["main_job"] = main_job(10 if reduced else FLAGS.main_steps, reduced)
  result["seconds"] = time.perf_counter() - t0
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
  with open(FLAGS.json, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {FLAGS.json} in {result['seconds']:.0f} s")
  failed = [f"{r['model']} {r['dtype']}" for r in result["rows"] if "error" in r]
  if failed:
    sys.exit(f"rows failed (their errors are in {FLAGS.json}): {', '.join(failed)}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
