"""EDM config F on CIFAR-10 32x32, NCSN++ (Karras et al. 2022, Table 2 / App. F): the
settings of edm_cifar10_ddpmpp with NCSN++'s Fourier embedding, residual encoder and
[1, 3, 3, 1] resampling."""

from configs import default


def get_config():
  c = default.get_edm_config("CIFAR10", 32, "ncsnpp", batch_size=512, duration_mimg=200,
                             lr=1e-3, ema_mimg=0.5, dropout=0.13, augment_p=0.12)
  c.lock()
  return c
