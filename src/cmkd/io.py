"""Input/output helpers shared by the core and the recipes. Strict JSON: NaN and infinities are written as
``null`` (``JSON.parse`` and other strict readers reject a bare ``NaN``), numpy scalars and arrays as plain values."""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def strict(obj: Any) -> Any:
    """``obj`` as plain JSON data: NaN / +-inf -> None, numpy scalars and arrays -> Python values, tuples ->
    lists, dict keys -> str (recursively)."""
    np = sys.modules.get("numpy")  # no numpy import for the CLI's sake: without it loaded, nothing is numpy
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return strict(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return strict(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict` ``(obj)``; never writes NaN or Infinity (``allow_nan=False``)."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)
