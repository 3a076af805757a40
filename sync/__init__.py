"""yardlink: sync package."""
