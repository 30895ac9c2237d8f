"""Checks on a workdir before a job writes anything to it."""

import os
import shutil
import tempfile

# Less than this cannot hold even a small model's checkpoint and samples.
_MIN_FREE_BYTES = 64 << 20


def check_writable(workdir: str) -> None:
  """Raise ValueError when `workdir` (or the folder it will be made in) is read-only or its
  disk full: said now, not after a run's work is done. Creates nothing."""
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"--workdir={workdir!r}: {existing} is a file; expected a folder.")
  # Tried, not os.access: root passes every permission check, and a read-only mount
  # answers only to a write.
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise ValueError(f"--workdir={workdir!r}: {existing} is not writable ({e.strerror}).") from e
  free = shutil.disk_usage(existing).free
  if free < _MIN_FREE_BYTES:
    raise ValueError(f"--workdir={workdir!r}: the disk holding {existing} has {free} bytes "
                     f"free; expected at least {_MIN_FREE_BYTES}.")
