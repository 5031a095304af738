"""Offline unlock: key-bound door tokens for when the building is cut off, and their revocation."""
