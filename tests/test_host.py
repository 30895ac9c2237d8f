"""The host malloc setting (score_jax.host): added once, never over a user's own."""

import os
import subprocess
import sys

import pytest

from score_jax import host

from conftest import ROOT


def test_malloc_env_adds_the_tunable_only_where_none_is_set(monkeypatch):
  monkeypatch.setattr(host, "_glibc", lambda: True)
  assert host.malloc_env({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": host.MALLOC_TUNABLES}
  # A user's own tunables, even an empty value (the opt-out), are kept as they are.
  for own in ("glibc.malloc.arena_max=1", ""):
    assert host.malloc_env({"GLIBC_TUNABLES": own}) == {"GLIBC_TUNABLES": own}
  monkeypatch.setattr(host, "_glibc", lambda: False)
  assert host.malloc_env({"A": "1"}) == {"A": "1"}


def test_reexec_runs_the_same_command_once_with_the_tunable():
  code = ("import os; print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES'), flush=True); "
          "from score_jax import host; host.reexec_with_malloc_tunables(); print('end', os.getpid())")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True).stdout.split()
  if not host._glibc():  # pylint: disable=protected-access
    assert out[0::3] == ["start", "end"]
    return
  # The first run execs itself with the tunable; the second finds it and goes on: same pid.
  assert out == ["start", out[1], "None", "start", out[1], host.MALLOC_TUNABLES, "end", out[1]]


@pytest.mark.parametrize("script", ["main.py", "experiments/benchmark.py"])
def test_entry_points_reexec_before_anything_else(script):
  # The script's source run as __main__ from -c, after a line that reports the variable: the
  # line runs twice, before and after the re-exec, and --helpshort then ends the program.
  path = os.path.join(ROOT, script)
  code = ("import os, sys; print('GLIBC_TUNABLES', os.environ.get('GLIBC_TUNABLES'), flush=True); "
          f"sys.argv = [{path!r}, '--helpshort']; "
          f"exec(compile(open({path!r}).read(), {path!r}, 'exec'), "
          f"{{'__name__': '__main__', '__file__': {path!r}}})")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True).stdout
  seen = [l.split(" ", 1)[1] for l in out.splitlines() if l.startswith("GLIBC_TUNABLES ")]
  reexecs = host._glibc()  # pylint: disable=protected-access
  assert seen == (["None", host.MALLOC_TUNABLES] if reexecs else ["None"]), out[-2000:]
