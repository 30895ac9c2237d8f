"""`SAMPLERS`: every sampler of the shared signature, by name.

    SAMPLERS[name](denoise_fn, x, sigmas, key=None, **options) -> x0

A new sampler is a new module plus one line here.
"""

from score_jax.samplers import dpm_solver, kdiffusion, ode, pc, unipc

SAMPLERS = {
    "euler": kdiffusion.euler,
    "heun": kdiffusion.heun,
    "dpm_2": kdiffusion.dpm_2,
    "lms": kdiffusion.lms,
    "euler_ancestral": kdiffusion.euler_ancestral,
    "ddim": kdiffusion.ddim,
    "dpm_solver": dpm_solver.dpm_solver,
    "dpmpp_2m": dpm_solver.dpmpp_2m,
    "dpmpp_3m": dpm_solver.dpmpp_3m,
    "dpmpp_2m_sde": dpm_solver.dpmpp_2m_sde,
    "dpmpp_sde": dpm_solver.dpmpp_sde,
    "unipc": unipc.unipc,
    "pc": pc.pc,
    "ode": ode.ode,
}
