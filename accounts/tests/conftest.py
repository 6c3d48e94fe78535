"""The identity tests' people are the suite's one persona set (tests/personas.py)."""

from tests.personas import ana, eve, groups, marc  # noqa: F401 (fixtures)
