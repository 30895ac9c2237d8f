"""How the host process allocates memory: glibc's malloc backed by transparent huge pages.

XLA:CPU allocates a compiled program's temporaries as one block per execution (344 MiB for
the NCSNv2 train step at ngf 32 / batch 16 on CIFAR-10 shapes) and frees it afterwards.
glibc serves blocks that large with a fresh mmap, so every step pays a page fault per 4 KiB
page: 91,240 faults and 0.203 s of kernel time per step on a 2-core machine, a quarter of
the step's CPU time. With `glibc.malloc.hugetlb=1` malloc asks the kernel for transparent
huge pages for such blocks (madvise), and the same step takes 819 faults and 0.051 s of
kernel time (`experiments/benchmark.py` reports both per step; it runs both sides of its
side-by-side comparison with this setting). PyTorch's train step is unaffected: it keeps
its tensors in blocks small enough for malloc to reuse. The kernel must allow transparent
huge pages on request (/sys/kernel/mm/transparent_hugepage/enabled at madvise or always,
the usual default); at never the setting changes nothing.

glibc reads its tunables once, at process start, so `main.py` and `experiments/benchmark.py`
re-execute themselves with the setting (`reexec_with_malloc_tunables`). A GLIBC_TUNABLES
variable that is already set, even empty, is left as it is: that is the way to opt out.
Accelerator memory is not malloc's; on GPU and TPU hosts only host-side buffers (the input
pipeline's) are affected.

Also here: where the process keeps JAX's persistent compilation cache.
"""

import os
import platform
import sys

MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"


def _glibc() -> bool:
  return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def malloc_env(environ=None) -> dict:
  """A copy of `environ` (default os.environ) with GLIBC_TUNABLES=MALLOC_TUNABLES added,
  on Linux with glibc and when GLIBC_TUNABLES is not set already; otherwise unchanged."""
  env = dict(os.environ if environ is None else environ)
  if _glibc() and "GLIBC_TUNABLES" not in env:
    env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
  return env


def reexec_with_malloc_tunables() -> None:
  """Replace this process by the same command line with `malloc_env()`, when that adds
  the setting; returns otherwise. Call it first thing in a program's entry point: what
  ran before is run again. The process id, open files and arguments stay the same."""
  env = malloc_env()
  if env.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
    # orig_argv keeps the interpreter's own options (-X, -W, -m) as they were given.
    os.execve(sys.executable, sys.orig_argv, env)


def use_compilation_cache(path: str, min_compile_secs: float = 1.0,
                          over_environment: bool = False) -> None:
  """Point JAX's persistent compilation cache at `path` ('' = off). A JAX_COMPILATION_CACHE_DIR
  the user set wins unless `over_environment` (the benchmark's cold / warm measurement needs
  a cache of its own). Programs that compile in under `min_compile_secs` are not stored:
  loading them would cost about as much as compiling."""
  if not path or (os.environ.get("JAX_COMPILATION_CACHE_DIR") and not over_environment):
    return
  import jax  # pylint: disable=g-import-not-at-top  # this module is imported before jax
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)


def release_freed_memory() -> None:
  """Hand the heap memory malloc holds but no longer uses back to the kernel (glibc's
  malloc_trim); does nothing on other C libraries, whose allocators return memory on free.

  XLA's compiler frees what it used (about 300 MiB for the NCSNv2 train step at ngf 32 on a
  2-core CPU, and as much again for `init`) in small pieces scattered over malloc's per-thread
  arenas. glibc keeps them: they cannot serve the one large block the compiled step asks
  for at every execution, so without this call that block comes on top of them and the
  process's peak RSS is the compiler's plus the step's. Call it after compiling, before the
  first execution.
  """
  if _glibc():
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None).malloc_trim(0)


def compile_then_release(jitted, *args):
  """`jitted` (a jax.jit function) compiled for `args`, with the compiler's freed heap
  released (`release_freed_memory`) before the program first runs."""
  compiled = jitted.lower(*args).compile()
  release_freed_memory()
  return compiled
