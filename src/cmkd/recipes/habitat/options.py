"""The habitat recipe's options: their real defaults (a full-size run's) and a quick run's differences."""

from __future__ import annotations

from cmkd.recipes.base import options_model

# options: samples, region (0 the reference, 1 the new one), a rules file (None: the built-in ILLUSTRATIVE rules)
OPTIONS = options_model("habitat", n=(int, 3000), region=(int, 0), rules=(str | None, None))
QUICK = {"n": 900}  # a quick run's differences
