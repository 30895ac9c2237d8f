"""DDPM on CIFAR-10 (Ho et al. 2020, App. B): 35,746,307 parameters (ch 128, ch_mult
(1, 2, 2, 2), attention at 16x16), dropout 0.1, lr 2e-4, batch 128, 800k steps, random
horizontal flips."""

from configs import default


def get_config():
  c = default.get_ddpm_config("CIFAR10", 32, (1, 2, 2, 2), dropout=0.1, lr=2e-4,
                              batch_size=128, n_iters=800_000, random_flip=True)
  c.lock()
  return c
