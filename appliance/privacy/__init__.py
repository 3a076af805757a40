"""Privacy on the appliance: plate tokens and the encrypted local blob store."""
