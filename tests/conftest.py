"""Shared fixtures: real-service fixtures live in ``tests/support``."""

pytest_plugins = [
    "tests.support.services",
    "tests.support.http",
    "tests.support.smtp",
    "tests.support.stack",
]
