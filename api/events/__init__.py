"""Gateway events: the journal each gateway delivers, stored once per (gateway, sequence)."""
