"""Groups of citizens (a volunteer association, library card holders)."""
