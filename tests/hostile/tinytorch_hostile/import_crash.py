"""Raises while being imported."""
raise RuntimeError("hostile: this submission crashes on import")
