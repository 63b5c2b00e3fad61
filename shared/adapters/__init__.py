"""Adapters: the ports implemented against Azure Storage and Microsoft Graph."""
