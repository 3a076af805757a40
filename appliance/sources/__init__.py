"""Frame sources: where the appliance gets camera frames."""
