"""Citizen self-service: my doors, my activity, my shares, my phone number."""
