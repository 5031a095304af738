"""The audit trail: every decision and every result, append-only."""
