"""fim: portable single-file Linux application containers."""

__version__ = "0.1.0"
