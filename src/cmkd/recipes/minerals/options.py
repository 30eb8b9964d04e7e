"""The minerals recipe's options: their real defaults (a full-size run's) and a quick run's differences."""

from __future__ import annotations

from typing import Any

from cmkd.recipes.base import options_model

# options (a full run's defaults): labelled share of the training pixels, scene size (pixels), site (0 the reference,
# > 0 a new site), the survey's carbonation coefficients (None: the built-in table) and calibration, and the storage
# capacity per m2 and pixel area behind the tonnages
OPTIONS = options_model("minerals", label_fraction=(float, 0.1), size=(int, 96), site=(int, 0),
                        carbonation=(Any, None), carbonation_calibration=(str, "none"),
                        capacity_t_per_m2=(float, 0.01), pixel_area_m2=(float, 100.0))
QUICK = {"size": 64}  # a quick run's differences
