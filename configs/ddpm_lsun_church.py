"""DDPM on LSUN Church 256x256, 1.2M steps, flips (Ho et al. 2020, App. B): the 256x256 model
(ch 128, ch_mult (1, 1, 2, 2, 4, 4), attention at 16x16, 113,673,219 parameters), dropout 0,
lr 2e-5, batch 64."""

from configs import default


def get_config():
  c = default.get_ddpm_config("LSUN_CHURCH", 256, (1, 1, 2, 2, 4, 4), dropout=0.0, lr=2e-5,
                              batch_size=64, n_iters=1_200_000, random_flip=True)
  c.lock()
  return c
