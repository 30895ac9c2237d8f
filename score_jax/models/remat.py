"""Rematerialisation (`jax.checkpoint`) of a network's blocks, a memory-for-compute switch.

With it on, the backward pass keeps only each block's inputs and recomputes what happens
inside the block: activation memory falls to about one block's worth plus the block
boundaries, for about one more forward pass of compute. What a block takes as input is
what it keeps, so a U-Net's decoder block joins its skip input itself (`encoder_features`)
instead of being handed the joined tensor, twice as wide: XLA fuses that concatenation
into its consumers when nothing checkpoints it, and keeping it cost as much as remat freed
(DDPM 256 px, README). Parameter names and values are unchanged, so a checkpoint trained
with it restores without it and back.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def maybe(block: type, enabled: bool, static_argnums: tuple = ()) -> type:
  """`block` itself, or `nn.remat(block)` when enabled.

  Args:
    block: a linen Module class, or a function whose first argument is the module whose
      layers it makes (they keep that module's names).
    enabled: the network's `remat` attribute.
    static_argnums: positions of Python values among __call__'s arguments (self is 0), such
      as a `train` flag or an output shape: they pick the program and cannot be traced.
  """
  return nn.remat(block, static_argnums=static_argnums) if enabled else block


def join(x, skip, split_gradient: bool):
  """x [..., C] and skip [..., C'] -> [..., C + C'] (concatenated). With split_gradient (set
  with remat) its gradient comes back as two separate buffers.

  Inside a rematerialised decoder block XLA fuses each half of the joined gradient into its
  consumer, and the skip's consumer is the encoder's backward, far later: the whole joined
  gradient stays live until then (DDPM 256 px with remat, TPU: three [16, 256, 256, 256]
  float32 gradients, 1 GiB each, at the peak). A barrier on the tangents transposes into a
  barrier on the two gradient halves, which makes XLA write them out and free the wide one.
  Without remat XLA schedules better left alone: the same barrier took that step's
  temporaries from 12,236 to 13,232 MiB, and one on the values (which stops the
  concatenation fusing into the norm and convolution that read it) to 18,470 MiB.
  """
  return _split_gradient_join(x, skip) if split_gradient else jnp.concatenate([x, skip], -1)


@jax.custom_jvp
def _split_gradient_join(x, skip):
  return jnp.concatenate([x, skip], axis=-1)


@_split_gradient_join.defjvp
def _split_gradient_join_jvp(primals, tangents):
  return (_split_gradient_join(*primals),
          jnp.concatenate(jax.lax.optimization_barrier(tangents), axis=-1))
