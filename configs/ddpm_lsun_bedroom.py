"""DDPM on LSUN Bedroom 256x256, 2.4M steps, no flips (the paper's one exception) (Ho et al. 2020, App. B): the 256x256 model
(ch 128, ch_mult (1, 1, 2, 2, 4, 4), attention at 16x16, 113,673,219 parameters), dropout 0,
lr 2e-5, batch 64."""

from configs import default


def get_config():
  c = default.get_ddpm_config("LSUN_BEDROOM", 256, (1, 1, 2, 2, 4, 4), dropout=0.0, lr=2e-5,
                              batch_size=64, n_iters=2_400_000, random_flip=False)
  c.lock()
  return c
