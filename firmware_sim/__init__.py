"""Emulated lock hardware and fleets of simulated gateways running the real lock_gateway code."""
