"""The runtime copied into every image: standard library only."""

VERSION = "0.1.0"
