"""mtard: search the accuracy-robustness trade-off of MTARD students."""

from mtard.checkpoint import load_checkpoint
from mtard.teachers import load_teacher

__all__ = ["load_checkpoint", "load_teacher"]
__version__ = "0.1.0"
