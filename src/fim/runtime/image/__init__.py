"""The image file format: header, reserved space, journal, payload and layer chain.

Nothing here knows about mounts, bubblewrap or commands.
"""
