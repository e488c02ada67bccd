"""Shared fixtures. Each helper module owns its fixtures; they are imported here so every suite sees them."""
