"""Gateway devices: provisioning, broker credentials, live status."""
