"""Domain models and errors. No azure.* or msgraph imports here."""
