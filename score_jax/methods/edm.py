"""EDM (Karras et al. 2022): a preconditioned network trained with the VP, VE or EDM loss
(the preconditioner's own: VPPrecond with VPLoss, ...), data in [-1, 1], optional class labels
(one-hot, `model.label_dim`) and EDM's non-leaky augmentation (`model.augment_p`: the pipe's
9 labels are fed to the network; at sampling they are absent, i.e. zero)."""

import jax
import jax.numpy as jnp

from score_jax import augment, losses, precond
from score_jax.methods import Method

LOSS_OF_PRECOND = {"vp": "vp", "ve": "ve", "edm": "edm"}


def loss_kwargs(config) -> dict:
  m = config.model
  if m.precond not in LOSS_OF_PRECOND:
    raise ValueError(f"config.model.precond={m.precond!r} has no training loss in EDM; "
                     f"train with one of {sorted(LOSS_OF_PRECOND)} (iDDPM networks can be "
                     "converted and sampled).")
  kind = LOSS_OF_PRECOND[m.precond]
  if kind == "edm":
    return dict(kind=kind, P_mean=m.P_mean, P_std=m.P_std, sigma_data=m.sigma_data)
  return dict(kind=kind)


def one_hot(labels, label_dim: int):
  """int [B] -> float32 [B, label_dim]; a label outside [0, label_dim) is an error upstream."""
  return jax.nn.one_hot(labels, label_dim, dtype=jnp.float32)


def make(config, model) -> Method:
  m = config.model
  kw = loss_kwargs(config)
  label_dim, augment_p = m.label_dim, m.augment_p

  def loss_fn(params, batch, key, labels=None, sample_ids=None):
    k_aug, k_loss, k_drop = (jax.random.fold_in(key, i) for i in range(3))
    y = 2.0 * batch - 1.0
    aug_labels = None
    if augment_p > 0:
      y, aug_labels = augment.augment_pipe(y, k_aug, augment_p, sample_ids=sample_ids)
    onehot = one_hot(labels, label_dim) if label_dim else None
    denoise = lambda x, s: model.apply({"params": params}, x, s, onehot, aug_labels,
                                       train=True, rngs={"dropout": k_drop})
    return jnp.mean(losses.edm_loss(denoise, y, k_loss, sample_ids=sample_ids, **kw))

  def denoiser(params, class_labels=None):
    lo, hi = model.sigma_range()
    fn = lambda x, s: model.apply({"params": params}, x, s, class_labels)
    # The sampler rounds its steps on the host; inside jit the snapshot's own table is a
    # tracer, so the recursion's table (3e-5 relative from it) is used there. The network
    # rounds again to its own table.
    round_sigma = (precond.round_to_grid(precond.iddpm_u_table(m.M, m.C_1, m.C_2)[:-1])
                   if m.precond == "iddpm" else None)
    return precond.Denoiser(fn, lo, hi, round_sigma)

  return Method(name="edm", loss_fn=loss_fn, denoiser=denoiser, score_fn=None, eps_fn=None,
                levels=None, betas=None, default_sampler="edm", label_dim=label_dim)
