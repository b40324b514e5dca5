"""JSON numbers as the published job schema means them (issue 11, item 8).

Job models validate in pydantic's strict mode, so the loader refuses what the schema
refuses: "5" for a number, "yes" or 1 for a boolean, true for an integer. Two gaps are
closed here:

- JSON Schema's `integer` is any number with a zero fractional part (320.0 is one, and a
  Python client's json.dumps writes it so), which strict mode would refuse:
  `integral_ints` turns such a float into the int it equals, for int fields only.
- Python's json module turns a very long integer into an error that names interpreter
  internals (sys.set_int_max_str_digits), and a float literal beyond the double range into
  inf: `parse_int` / `parse_float` refuse both with a plain message.
"""

from __future__ import annotations

import functools
import math
from typing import Any, get_args

from pydantic import BaseModel

# Far beyond any integer a client sends (JavaScript writes 1e21 and up in exponent form),
# far below Python's 4300-digit conversion limit.
MAX_INT_DIGITS = 100
# Floats at or beyond 2**53 are not exact integers any more: leave them to the int check.
_EXACT = 2**53


def parse_int(text: str) -> int:
    """json.loads(parse_int=...): an integer literal of at most MAX_INT_DIGITS digits."""
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer has {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def parse_float(text: str) -> float:
    """json.loads(parse_float=...): a number literal within the range of a double."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


def _integral(value: Any) -> Any:
    if type(value) is float and value.is_integer() and abs(value) < _EXACT:
        return int(value)
    return value


@functools.cache
def _int_keys(model: type[BaseModel]) -> frozenset[str]:
    """Names and aliases of the model's `int` and `int | None` fields."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        if field.annotation is int or set(get_args(field.annotation)) == {int, type(None)}:
            keys.update(k for k in (name, field.alias) if k)
    return frozenset(keys)


def integral_ints(model: type[BaseModel], data: Any) -> Any:
    """A model's before-validator: 320.0 -> 320 in its int fields (nothing else changes)."""
    if not isinstance(data, dict):
        return data
    keys = _int_keys(model)
    if not any(type(data.get(k)) is float for k in keys):
        return data  # the usual case: no copy
    return {k: _integral(v) if k in keys else v for k, v in data.items()}
