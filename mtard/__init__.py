"""mtard: search the accuracy-robustness trade-off of MTARD students."""

__version__ = "0.1.0"
