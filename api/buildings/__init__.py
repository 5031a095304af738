"""Buildings and their doors."""
