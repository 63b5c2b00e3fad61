"""Use cases: booking, availability, sync, reconciliation. Depend on ports only."""
