"""Public opening hours: doors any eligible signed-in citizen may open at set times."""
