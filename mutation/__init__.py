"""Mutation testing of the core logic (`make mutate`): see docs/mutation-testing.md."""
