"""EDM on AFHQv2 64x64, DDPM++ with four levels (1, 2, 2, 2) (Karras et al. 2022, App. F):
batch 256, 200 Mimg, lr 2e-4, EMA half-life 0.5 Mimg, dropout 0.25, augmentation p 0.15.
Data: --config.data.path=afhqv2-64x64.zip (EDM's dataset_tool layout)."""

from configs import default


def get_config():
  c = default.get_edm_config("AFHQV2", 64, "ddpmpp", batch_size=256, duration_mimg=200,
                             lr=2e-4, ema_mimg=0.5, dropout=0.25, augment_p=0.15,
                             channel_mult=(1, 2, 2, 2))
  c.lock()
  return c
