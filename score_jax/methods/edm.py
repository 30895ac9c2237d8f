"""EDM (Karras et al. 2022): a preconditioned network trained with the VP, VE or EDM loss
(the preconditioner's own: VPPrecond with VPLoss, ...), data in [-1, 1], optional class labels
(one-hot, `label_dim`) and EDM's non-leaky augmentation (`augment_p`: the pipe's 9 labels are
fed to the network; at sampling they are absent, i.e. zero)."""

import jax
import jax.numpy as jnp

from score_jax import augment, losses, precond
from score_jax.methods import Method

LOSS_OF_PRECOND = {"vp": "vp", "ve": "ve", "edm": "edm"}


def one_hot(labels, label_dim: int):
  """int [B] -> float32 [B, label_dim]; a label outside [0, label_dim) is an error upstream."""
  return jax.nn.one_hot(labels, label_dim, dtype=jnp.float32)


def make(model, loss_kwargs: dict, label_dim: int = 0, augment_p: float = 0.0) -> Method:
  """The method of an `models.edm.EDMNet`: `loss_kwargs` are `losses.edm_loss`'s (kind 'vp',
  've' or 'edm', and EDM's P_mean, P_std, sigma_data)."""

  def loss_fn(params, batch, key, labels=None, sample_ids=None):
    k_aug, k_loss, k_drop = (jax.random.fold_in(key, i) for i in range(3))
    y = 2.0 * batch - 1.0
    aug_labels = None
    if augment_p > 0:
      y, aug_labels = augment.augment_pipe(y, k_aug, augment_p, sample_ids=sample_ids)
    onehot = one_hot(labels, label_dim) if label_dim else None
    denoise = lambda x, s: model.apply({"params": params}, x, s, onehot, aug_labels,
                                       train=True, rngs={"dropout": k_drop})
    return jnp.mean(losses.edm_loss(denoise, y, k_loss, sample_ids=sample_ids, **loss_kwargs))

  # The sampler rounds its steps on the host; inside jit the snapshot's own table is a
  # tracer, so the recursion's table (3e-5 relative from it) is used there. The network
  # rounds again to its own table.
  table = model.precond.table() if model.precond.table_size else None
  round_sigma = None if table is None else precond.round_to_grid(table[:-1])

  def denoiser(params, class_labels=None):
    lo, hi = model.sigma_range()
    fn = lambda x, s: model.apply({"params": params}, x, s, class_labels)
    return precond.Denoiser(fn, lo, hi, round_sigma)

  return Method(name="edm", loss_fn=loss_fn, denoiser=denoiser, score_fn=None, eps_fn=None,
                levels=None, betas=None, default_sampler="edm", label_dim=label_dim)
