"""The runtime copied into every image: standard library only."""
