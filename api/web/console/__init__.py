"""The manager console under /console."""
