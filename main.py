"""Train or sample a score model.

  python main.py --config=configs/ncsnv2_mnist.py --mode=train --workdir=/tmp/mnist
  python main.py --config=configs/ncsnv2_mnist.py --mode=sample --workdir=/tmp/mnist \
      --config.sampling.batch_size=100

Multi-host: every host runs the same command; on TPU pods pass --distributed, elsewhere
--coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from score_jax import calibrate, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples and metrics.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "calibrate"],
                  "train; sample from the newest checkpoint; calibrate noise settings from data.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process.")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # orbax logs every save step at INFO; progress bars and errors are what a user reads.
    logging.set_verbosity(logging.WARNING)
  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, %d local / %d global devices (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  config = FLAGS.config
  if FLAGS.mode == "train":
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "sample":
    train.sample(config, FLAGS.workdir)
  elif FLAGS.mode == "calibrate":
    calibrate.run(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
