"""mtard: search the accuracy-robustness trade-off of MTARD students."""

from mtard.checkpoint import load_checkpoint

__all__ = ["load_checkpoint"]
__version__ = "0.1.0"
