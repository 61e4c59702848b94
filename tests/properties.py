"""How many examples a property test draws: its own budget in a whole run, at most the ``unit``
Hypothesis profile's when only the unit tier runs (``./dev test unit``; tests/conftest.py chooses)."""
from __future__ import annotations

from hypothesis import settings

UNIT_PROFILE = "unit"
UNIT_EXAMPLES = 15      # keeps ./dev test unit within seconds; the whole run draws each test's own budget

settings.register_profile(UNIT_PROFILE, max_examples=UNIT_EXAMPLES, deadline=None)


def examples(budget: int) -> int:
    """``budget``, bounded by the unit profile when it is the one in force."""
    if settings.default is settings.get_profile(UNIT_PROFILE):
        return min(budget, UNIT_EXAMPLES)
    return budget
