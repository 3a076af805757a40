"""yardlink: image_build package."""
