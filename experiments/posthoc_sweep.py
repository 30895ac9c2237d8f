"""Post-hoc EMA on MNIST (EDM2 Fig. 5 in miniature): the Frechet distance of the EMA of each
length, all reconstructed after one training run.

  python experiments/posthoc_sweep.py --workdir=/tmp/posthoc          # trains first, ~13 min
  python experiments/posthoc_sweep.py --workdir=W --sigma_rels=0.05,0.1 --samples=108

Trains `configs/edm_mnist.py` with two power-function EMAs (sigma_rel 0.05 and 0.10, EDM2's
pair) stored every `--snapshot_freq` steps (skipped when the workdir holds its last
checkpoint; any edm_mnist workdir trained with post-hoc EMAs is taken as it is), then for
each target sigma_rel runs `--mode=posthoc_ema`'s reconstruction into
`<workdir>/posthoc_sweep/<sigma_rel>/`, samples `--samples` images from the same starting
points with the config's sampler (EDM's Heun, S_churn 10) and scores them with the MNIST
Frechet distance the main job ends with. The run's own EMA (EDM's half-life EMA) is scored
the same way, as the reference line. Writes `<workdir>/posthoc_sweep.json` and the plot
`--plot`.
"""

import json
import os
import sys

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import edm_mnist  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import mnist_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax import build, checkpoints, generate, posthoc_ema, sharding  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", "/tmp/posthoc_sweep", "The edm_mnist run with post-hoc EMAs.")
flags.DEFINE_string("sigma_rels", "0.03,0.05,0.07,0.1,0.13,0.17,0.22,0.28",
                    "Target EMA lengths (relative widths).")
flags.DEFINE_integer("snapshot_freq", 100, "Steps between snapshots, when training here.")
flags.DEFINE_integer("samples", 108, "Samples per point.")
flags.DEFINE_string("plot", "docs/posthoc_sweep.png", "Where the plot goes ('' for none).")
FLAGS = flags.FLAGS


def config(**posthoc):
  c = edm_mnist.get_config()
  with c.unlocked():
    c.training.posthoc_sigma_rels = (0.05, 0.10)
    c.training.posthoc_snapshot_freq = FLAGS.snapshot_freq
    c.posthoc.update(posthoc)
  return c


def reconstructed(rel: float) -> str:
  """The workdir holding the reconstruction of `rel` (made unless already there)."""
  out = os.path.join(FLAGS.workdir, "posthoc_sweep", f"{rel:g}")
  if checkpoints.Checkpointer(out, {}, create=False).latest_step() is None:
    b = mnist_common.trained(config(sigma_rel=rel, out=out), FLAGS.workdir, "posthoc_ema")
    posthoc_ema.reconstruct(b, FLAGS.workdir)
  return out


def main(argv):
  del argv
  built = mnist_common.trained(config(), FLAGS.workdir, "sample")
  fd = mnist_common.mnist_frechet(built.data)
  mesh = sharding.data_mesh()
  sample = jax.jit(generate.sample_fn_of(built, batch_size=FLAGS.samples))
  key = jax.random.PRNGKey(0)

  def score(workdir: str) -> float:
    ckpt, target = checkpoints.open_trained(workdir, built, mesh)
    return fd(np.asarray(sample(ckpt.restore_latest(target).ema_params, key)))

  rows = []
  for rel in [float(v) for v in FLAGS.sigma_rels.split(",")]:
    rows.append(dict(sigma_rel=rel, fd=score(reconstructed(rel))))
    print(json.dumps(rows[-1]), flush=True)
  own = score(FLAGS.workdir)
  best = min(rows, key=lambda r: r["fd"])
  print(f"training's own EMA: FD {own:.2f}; best post-hoc sigma_rel {best['sigma_rel']:g}: "
        f"FD {best['fd']:.2f}", flush=True)
  with open(os.path.join(FLAGS.workdir, "posthoc_sweep.json"), "w") as f:
    json.dump(dict(samples=FLAGS.samples, snapshot_freq=FLAGS.snapshot_freq, rows=rows,
                   training_ema_fd=own, best=best), f, indent=1)
  if FLAGS.plot:
    plot(rows, own, FLAGS.plot)


def plot(rows, own: float, path: str):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(5, 3.6))
  ax = fig.subplots()
  ax.plot([r["sigma_rel"] for r in rows], [r["fd"] for r in rows], "o-",
          label="post-hoc EMA (from sigma_rel 0.05, 0.10 snapshots)")
  ax.axhline(own, color="gray", ls="--", label="the run's EMA (EDM half-life)")
  ax.set_xlabel("EMA length sigma_rel")
  ax.set_ylabel("MNIST Frechet distance")
  ax.set_title("edm_mnist, 2,000 steps: post-hoc EMA sweep")
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  app.run(main)
