"""Class-conditional MNIST with classifier-free guidance: does the requested digit come out?

  python experiments/guidance_accuracy.py --workdir=/tmp/cond          # trains first, ~15 min
  python experiments/guidance_accuracy.py --workdir=W --weights=1,2,4 --per_class=20

Trains `configs/edm_mnist_cond.py` (skipped when the workdir holds its last checkpoint),
then for each guidance weight W samples `per_class` images of every digit K (EDM's sampler,
the config's settings, `sampling.class_label=K`, `sampling.guidance=W`) and classifies them
with the shipped MNIST classifier (score_jax.eval.mnist_features, 96% on held-out digits):
the fraction whose predicted digit is K. Writes `<workdir>/guidance_accuracy.json` and a grid
with one row per digit at the largest weight (`--grid`).
"""

import json
import os
import sys

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import edm_mnist_cond  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import mnist_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax import build, checkpoints, generate, images, sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from score_jax.eval import mnist_features, shards  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_string("workdir", "/tmp/guidance_accuracy", "The conditional model's workdir.")
flags.DEFINE_string("weights", "1,2,4", "Guidance weights W.")
flags.DEFINE_integer("per_class", 20, "Samples per digit and weight.")
flags.DEFINE_string("grid", "docs/edm_mnist_cond_grid.png", "One row per digit ('' for none).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  c = edm_mnist_cond.get_config()
  mnist_common.trained(c, FLAGS.workdir)
  classify = mnist_features.load_mnist_features()
  results, grid_rows = {}, []
  for w in [float(v) for v in FLAGS.weights.split(",")]:
    correct, rows = [], []
    for digit in range(10):
      with c.unlocked():
        c.sampling.class_label, c.sampling.guidance = digit, w
        c.sampling.batch_size = FLAGS.per_class
      b = build.build(c, "sample")
      mesh = sharding.data_mesh()
      ck, target = checkpoints.open_trained(FLAGS.workdir, b, mesh)
      params = ck.restore_latest(target).ema_params
      key = jax.random.PRNGKey(digit)
      x = np.asarray(jax.jit(generate.sample_fn_of(b))(params, key))
      logits = np.asarray(classify(shards.to_inception_input(x))[1])
      correct.append(float(np.mean(logits.argmax(1) == digit)))
      rows.append(np.clip(x[:10], 0, 1))
    results[str(w)] = dict(accuracy=float(np.mean(correct)), per_digit=correct)
    print(f"guidance {w}: {np.mean(correct):.3f} of the samples are the digit asked for "
          f"(per digit {np.round(correct, 2).tolist()})", flush=True)
    grid_rows = rows
  os.makedirs(FLAGS.workdir, exist_ok=True)
  with open(os.path.join(FLAGS.workdir, "guidance_accuracy.json"), "w") as f:
    json.dump(dict(per_class=FLAGS.per_class, results=results), f, indent=1)
  if FLAGS.grid:
    images.save_grid(np.concatenate(grid_rows), FLAGS.grid, ncol=10)


if __name__ == "__main__":
  app.run(main)
