"""EDM on class-conditional ImageNet 64x64 with ADM (Karras et al. 2022, Sec. 6 / App. F.3):
DhariwalUNet (192 channels, levels (1, 2, 3, 4), attention at 32, 16, 8), 1,000 classes,
batch 4096, 2,500 Mimg, lr 1e-4, EMA half-life 50 Mimg, dropout 0.1, no augmentation.
Data: --config.data.path=imagenet-64x64.zip (EDM's dataset_tool layout, dataset.json labels)."""

from configs import default


def get_config():
  c = default.get_edm_config("IMAGENET64", 64, "adm", batch_size=4096, duration_mimg=2500,
                             lr=1e-4, ema_mimg=50, dropout=0.10, augment_p=0.0,
                             label_dim=1000)
  c.lock()
  return c
