"""Samplers as pure functions built on lax.scan, one module per family.

`SAMPLERS` (registry.py) holds every sampler of the shared signature
`fn(denoise_fn, x, sigmas, key=None, **options) -> x0` (k-diffusion's convention; `schedules`
makes the sigmas): `kdiffusion` (euler, heun, dpm_2, lms, euler_ancestral, ddim),
`dpm_solver` (dpm_solver, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, dpmpp_sde), `unipc`. The papers'
own samplers keep their signatures, so official outputs stay matched:

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
from score_jax.samplers.guidance import guided, guided_in_one_call
from score_jax.samplers.registry import SAMPLERS
from score_jax.samplers.langevin import (IndexedScoreFn, annealed_langevin,
                                         annealed_langevin_inpaint,
                                         annealed_langevin_interpolate, indexed_score_fn,
                                         langevin_step_sizes)
