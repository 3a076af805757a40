"""yardlink: appliance package."""
