"""`is_int`: what every layer of the package counts as an integer argument (a leaf module, so the
ops, the modules and the codec share one rule without importing each other)."""
from __future__ import annotations

import numbers


def is_int(v) -> bool:
    """An int that is not a bool; numpy's integers count (they come out of arrays and arithmetic)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)
