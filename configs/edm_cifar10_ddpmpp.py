"""EDM config F on CIFAR-10 32x32, DDPM++ (Karras et al. 2022, Table 2 / App. F): batch 512,
200 Mimg (390,625 steps), lr 1e-3 ramped up over 10 Mimg, EMA half-life 0.5 Mimg, dropout
0.13, augmentation p 0.12. Unconditional (FID 1.97); --config.model.label_dim=10 trains the
conditional model (1.79)."""

from configs import default


def get_config():
  c = default.get_edm_config("CIFAR10", 32, "ddpmpp", batch_size=512, duration_mimg=200,
                             lr=1e-3, ema_mimg=0.5, dropout=0.13, augment_p=0.12)
  c.lock()
  return c
