"""Errors a user can cause and fix, shared across layers (main.py says them in one line)."""


class CheckpointMismatchError(ValueError):
  """A checkpoint or weights file does not fit the model the config builds (or is not the
  kind of file expected)."""
