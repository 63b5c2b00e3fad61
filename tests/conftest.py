"""Shared fixtures, grouped by what they start: see tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.storage",
    "tests.fixtures.graph_emulator",
    "tests.fixtures.contract",
    "tests.fixtures.stack",
    "pytester",
]
