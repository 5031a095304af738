"""Owners (e.g. a city district) and the scopes of their managers."""
