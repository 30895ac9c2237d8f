"""conftest.tiny_config as a config file, for tests that run main.py in subprocesses."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conftest import tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  c = tiny_config()
  c.lock()
  return c
