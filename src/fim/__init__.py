"""fim: portable single-file Linux application containers."""

from fim.runtime import VERSION as __version__

__all__ = ["__version__"]
