"""ivg: align a frozen language model at inference time with small value functions.

This package re-exports the public API of ``ivg_core``.
"""

from ivg_core import *  # noqa: F403
from ivg_core import __all__  # noqa: F401
