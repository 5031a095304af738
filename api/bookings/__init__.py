"""Bookings pushed by booking systems through the machine API."""
