"""Parameters that refuse NaN and ±inf (NaN passes every comparison-based check)."""

from __future__ import annotations

import math
import numbers

import param


def _refuse_non_finite(parameter: param.Parameter, values) -> None:
    # NaN passes every comparison-based check (bounds, order): refuse it, and ±inf, here.
    if any(isinstance(v, numbers.Real) and not math.isfinite(v) for v in values):
        shown = values if len(values) > 1 else values[0]
        raise ValueError(f"{parameter.label or parameter.name} must be finite, not {shown!r}.")


class FiniteRange(param.Range):
    """A :class:`param.Range` that refuses NaN and ±inf (``Range`` accepts ``(nan, 100)``)."""

    def _validate_value(self, value, allow_None):
        super()._validate_value(value, allow_None)
        if value is not None:
            _refuse_non_finite(self, tuple(value))


class FiniteNumber(param.Number):
    """A :class:`param.Number` that refuses NaN and ±inf even without bounds."""

    def _validate_value(self, value, allow_None):
        super()._validate_value(value, allow_None)
        if value is not None and not callable(value):
            _refuse_non_finite(self, (value,))
