"""Building modes: lockdown and passage (held-open) schedules, pushed to gateways signed."""
