"""score_jax: score-based generative models (NCSN, NCSNv2, EDM, DDPM) in JAX/Flax.

The library is organised as pure functions: networks are `flax.linen` modules used through
`apply`, and losses, train steps and samplers are functions of (params, data, key).
"""

__version__ = "0.1.0"
