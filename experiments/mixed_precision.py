"""The MNIST job with float32 and with bfloat16 compute: its loss curve, side by side.

  python experiments/mixed_precision.py --workdir=/tmp/precision
  python experiments/mixed_precision.py --workdir=/tmp/precision --n_iters=600 \
      --config=configs/ncsnv2_mnist.py --config.eval.after_training=False

Trains `--config` (default: the README's MNIST job) once per compute dtype
(`model.dtype`; parameters, Adam and EMA stay float32 in both), each in WORKDIR/<dtype>,
with the train job of main.py, its seeds and batches, and its closing eval. Then writes
WORKDIR/loss_curves.json and WORKDIR/loss_curves.png and prints the training loss of both
averaged over windows of steps, their relative difference, and each run's closing eval.
A finished run (its metrics.jsonl reaches n_iters) is read, not trained again.

On a CPU this shows what bfloat16 arithmetic does to training, not its speed: XLA:CPU has
no fast bfloat16 convolutions. Memory on accelerators: `benchmark.py --memory`.
"""

import copy
import glob
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_jax import build
from score_jax import train  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def define_flags():
  """Defined when run as a script only: the tests import this module beside benchmark.py,
  which has its own --config."""
  config_flags.DEFINE_config_file("config", "configs/ncsnv2_mnist.py", "The job's config.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Where the two runs and the curves go.", required=True)
  flags.DEFINE_integer("n_iters", 0, "Train steps of each run (0: the config's).")
  flags.DEFINE_integer("window", 600, "Steps per averaged window in the printed table.")


DTYPES = ("float32", "bfloat16")


def read_losses(workdir: str) -> list:
  """[(step, loss)] of a run's metrics.jsonl, in step order."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def closing_eval(workdir: str) -> dict:
  """The numbers of the run's last eval/<step>.json, or {} when it has none."""
  files = [f for f in glob.glob(os.path.join(workdir, "eval", "*.json"))
           if os.path.basename(f).split(".")[0].isdigit()]
  if not files:
    return {}
  last = max(files, key=lambda f: int(os.path.basename(f).split(".")[0]))
  with open(last) as f:
    result = json.load(f)
  return {k: v for k, v in result.items() if isinstance(v, (int, float))}


def windows(curve: list, width: int) -> dict:
  """{last step of window: mean loss} over consecutive windows of `width` steps."""
  out = {}
  for step, loss in curve:
    out.setdefault((step - 1) // width, []).append(loss)
  return {(k + 1) * width: sum(v) / len(v) for k, v in sorted(out.items())}


def compare(curves: dict, width: int) -> list:
  """Rows {steps, float32, bfloat16, rel_diff} of windowed mean losses."""
  a, b = (windows(curves[d], width) for d in DTYPES)
  return [{"steps": f"{k - width + 1}-{k}", "float32": a[k], "bfloat16": b[k],
           "rel_diff": (b[k] - a[k]) / a[k]} for k in a if k in b]


def plot(curves: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4))
  for d in DTYPES:
    steps, losses = zip(*curves[d])
    ax.plot(steps, losses, label=f"{d} compute", lw=1)
  ax.set_xlabel("step")
  ax.set_ylabel("training loss (logged steps)")
  ax.set_yscale("log")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  os.makedirs(FLAGS.workdir, exist_ok=True)
  curves, evals = {}, {}
  for dtype in DTYPES:
    config = copy.deepcopy(FLAGS.config)
    config.model.dtype = dtype
    if FLAGS.n_iters:
      config.training.n_iters = FLAGS.n_iters
    run = os.path.join(FLAGS.workdir, dtype)
    done = (os.path.exists(os.path.join(run, "metrics.jsonl"))
            and read_losses(run)[-1][0] >= config.training.n_iters)
    if not done:
      train.train_and_evaluate(build.build(config), run)
    curves[dtype], evals[dtype] = read_losses(run), closing_eval(run)
  rows = compare(curves, FLAGS.window)
  with open(os.path.join(FLAGS.workdir, "loss_curves.json"), "w") as f:
    json.dump({"curves": curves, "windows": rows, "closing_eval": evals}, f, indent=1)
  plot(curves, os.path.join(FLAGS.workdir, "loss_curves.png"))
  print(f"{'steps':<12} {'float32':>10} {'bfloat16':>10} {'rel diff':>9}")
  for r in rows:
    print(f"{r['steps']:<12} {r['float32']:>10.4f} {r['bfloat16']:>10.4f} "
          f"{r['rel_diff']:>+9.2%}")
  for d in DTYPES:
    print(f"closing eval, {d}: {evals[d] or 'none'}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
