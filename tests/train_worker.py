"""Runs a tiny training job and prints its losses as JSON; the tests run it in subprocesses
so that each can have its own device count or be one process of several."""

import argparse
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_HERE), _HERE]


def worker_config(n_iters):
  """The worker's config: the tests' tiny one, batch 8, one checkpoint at n_iters."""
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  return tiny_config(**{"training.n_iters": n_iters, "training.batch_size": 8,
                        "training.snapshot_sampling": False, "training.snapshot_freq": n_iters})


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--n_iters", type=int, default=3)
  p.add_argument("--coordinator", default=None)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  # Which sampling jobs follow training; each is one more program to compile.
  p.add_argument("--samples", default="sample,inpainting,interpolation")
  args = p.parse_args()
  import jax
  if args.coordinator:
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  from score_jax import build, generate, train
  c = worker_config(args.n_iters)
  train.train_and_evaluate(build.build(c), args.workdir)
  jobs = args.samples.split(",") if args.samples else []
  if "sample" in jobs:
    generate.sample(build.build(c), args.workdir)  # writes samples/sample_<n_iters>.npz on process 0
  # inpaint_<n>.npz: 2 rows x 4 completions; interpolation_<n>.npz: 1 row of 9, padded to
  # one row per device.
  for mode in ("inpainting", "interpolation"):
    if mode not in jobs:
      continue
    with c.unlocked():
      c.sampling[mode] = True
    generate.sample(build.build(c), args.workdir)
    with c.unlocked():
      c.sampling[mode] = False
  if jax.process_index() == 0:
    with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
      losses = [json.loads(line)["loss"] for line in f]
    print("LOSSES=" + json.dumps({"devices": jax.device_count(), "losses": losses}))


if __name__ == "__main__":
  main()
