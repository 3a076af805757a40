"""yardlink: cloud_ingest package."""
