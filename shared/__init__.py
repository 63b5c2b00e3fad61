"""Booking Sync for Microsoft 365: the application (domain, services, adapters)."""
