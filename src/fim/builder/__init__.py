"""Everything that only runs on the packager's machine."""
