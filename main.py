"""Train, sample, convert or summarise a score model; one entry for every method.

  python main.py --config=configs/ncsnv2_mnist.py --mode=train --workdir=/tmp/mnist
  python main.py --config=configs/ncsnv2_mnist.py --mode=sample --workdir=/tmp/mnist \
      --config.sampling.batch_size=100
  python main.py --config=configs/ddpm_cifar10.py --mode=convert --workdir=/tmp/ddpm \
      --config.convert.path=PATH/TO/google-ddpm-cifar10-32
  python main.py --config=configs/ddpm_cifar10.py --mode=summary

Modes (the keys of JOBS): train; sample (newest checkpoint, `--config.sampling.method`: the
papers' langevin | ancestral | edm | ablation, or any of score_jax.samplers.SAMPLERS);
calibrate (noise settings from data); convert (official weights: an NCSN/NCSNv2 .pth, a
diffusers DDPM folder or an EDM .pkl snapshot, `--config.convert.path`); summary (parameters
and FLOPs per image, nothing written); data (the first batch as a grid, count, shape,
images/s); eval (FID / IS / KID of the newest checkpoint's samples, resumable,
`--config.eval.*`; `--config.eval.metric=bpd` DDPM's bound, `bpd_ode` the PF-ODE likelihood);
eval_ref (reference statistics of the config's data); posthoc_ema (EDM2's post-hoc EMA).
Every mode first builds everything the config describes (score_jax.build): a bad value
fails in one line before anything is written.

Multi-host: every host runs the same command; on TPU pods pass --distributed, elsewhere
--coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

import os
import sys

from score_jax import host

if __name__ == "__main__":
  # Before jax is imported: glibc reads its malloc settings once, at process start.
  host.reexec_with_malloc_tunables()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app, flags, logging
from ml_collections import config_flags

from score_jax import build, calibrate, checkpoints, convert, data, errors, generate, posthoc_ema
from score_jax import summary, train, workdirs
from score_jax.eval import fid, reference
from score_jax.importers import torch_pickle

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples and metrics.")
flags.DEFINE_enum("mode", "train",
                  ["train", "sample", "calibrate", "convert", "summary", "data", "eval",
                   "eval_ref", "posthoc_ema"],  # the keys of JOBS
                  "train; sample from the newest checkpoint; calibrate noise settings from "
                  "data; convert official weights; summary: parameters and FLOPs; data: "
                  "preview the input pipeline; eval: FID/IS/KID of the newest checkpoint; "
                  "eval_ref: reference statistics of the data; posthoc_ema: EDM2's post-hoc "
                  "EMA of any length from the training's snapshots.")
flags.DEFINE_string(
    "compilation_cache",
    os.environ.get("SCORE_JAX_COMPILATION_CACHE",
                   os.path.join(os.path.expanduser("~"), ".cache", "score_jax", "xla")),
    "JAX's persistent compilation cache: a second run of the same programs (sample, eval, "
    "a resumed train) loads them instead of compiling. '' turns it off; the environment "
    "variable SCORE_JAX_COMPILATION_CACHE moves it; JAX_COMPILATION_CACHE_DIR, when set, wins.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process.")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.mark_flags_as_required(["config"])

# What a user can cause and fix: said in one line, without a traceback. Anything else is a
# bug and keeps its traceback.
_USER_ERRORS = (errors.CheckpointMismatchError, checkpoints.CorruptCheckpointError,
                checkpoints.NonFiniteError,
                torch_pickle.UnsafePickleError,
                FileNotFoundError, FileExistsError, ValueError)


def _data(built, workdir):
  r = data.preview(built.data, workdir)
  print(f"{r['source']}: {r['count']} images; batch {r['batch_shape']} float32 in [0, 1]; "
        f"{r['images_per_s']:.0f} images/s decoded and preprocessed; first batch in "
        f"{r['preview']}" + (f"; skipped {r['skipped']} bad image(s)" if r["skipped"] else ""))


def _convert(built, workdir):
  step = convert.convert_to_workdir(built, workdir)
  print(f"Wrote step {step} of {built.convert_path} to {workdir}/checkpoints; sample with "
        "--mode=sample.")


# --mode -> the job: each takes what the builder built and the workdir.
JOBS = {
    "train": train.train_and_evaluate,
    "sample": generate.sample,
    "calibrate": calibrate.run,
    "summary": lambda built, workdir: print(summary.format_summary(summary.summarize(built))),
    "eval": fid.evaluate,
    "eval_ref": reference.run,
    "data": _data,
    "convert": _convert,
    "posthoc_ema": posthoc_ema.run,
}


def run(config, mode: str, workdir):
  """Build everything `config` describes (every check, nothing written), then run the job."""
  if mode != "summary" and not workdir:
    raise ValueError(f"--workdir is required for --mode={mode}.")
  built = build.build(config, mode)
  if mode != "summary":
    workdirs.check_writable(workdir)
  JOBS[mode](built, workdir)


def _one_line(e: BaseException) -> str:
  # ml_collections wraps a KeyError in an AttributeError: the innermost message is the text.
  while isinstance(e, BaseException) and len(e.args) == 1:
    e = e.args[0]
  return " ".join(str(e).split())


def parse_flags(argv):
  """absl's parse, with config errors (a missing config file, a misspelt --config.key, a
  value of the wrong type) said in one line instead of a traceback."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.lock()  # a config file that failed to load raises on first use, here
  except flags.Error as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    reason = [line.strip() for line in str(e.__cause__ or e).splitlines() if line.strip()]
    print(f"error: --config cannot be loaded: {reason[-1]}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:  # ml_collections' answer to an unknown key
    print(f"error: a --config.* flag names no key of the config: {_one_line(e)}",
          file=sys.stderr)
    sys.exit(2)
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # orbax logs every save step at INFO; progress bars and errors are what a user reads.
    logging.set_verbosity(logging.WARNING)
  host.use_compilation_cache(FLAGS.compilation_cache)
  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, %d local / %d global devices (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  try:
    run(FLAGS.config, FLAGS.mode, FLAGS.workdir)
  except _USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # After a failed checkpoint read, tensorstore's threads print "Event loop is closed"
    # tracebacks while the interpreter shuts down under them. The error is said and every
    # save was finished before it was raised (train.py waits): nothing is left to run.
    os._exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
