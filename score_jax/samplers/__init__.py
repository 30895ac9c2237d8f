"""Samplers as pure functions built on lax.scan, one module per family.

- `langevin`: annealed Langevin dynamics (NCSN / NCSNv2), inpainting, interpolation;
- `ancestral`: DDPM's ancestral sampler;
- `edm`: EDM's own sampler and its design-space (ablation) sampler over Table 1.

Every sample's randomness comes from `fold_in(key, sample_id)`: a sample depends only on the
key and its id, whichever batch, split or device count produced it.
"""

from score_jax.samplers.ancestral import VARIANCES, ddpm_ancestral, ddpm_step
from score_jax.samplers.common import (INITS, gaussian_init, initial_samples, per_sample_keys,
                                       uniform_init)
from score_jax.samplers.edm import (DenoiseFn, ablation_sampler, denoiser_from_score,
                                    edm_sampler)
from score_jax.samplers.langevin import (IndexedScoreFn, annealed_langevin,
                                         annealed_langevin_inpaint,
                                         annealed_langevin_interpolate, indexed_score_fn,
                                         langevin_step_sizes)
