"""Abuse limits: unlock rate per citizen and door, failed authentication per client, request
body size. See docs/reliability.md ("Abuse limits")."""
