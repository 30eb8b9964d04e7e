"""The recycling recipe's options: their real defaults (a full-size run's) and a quick run's differences."""

from __future__ import annotations

from typing import Any

from cmkd.recipes.base import options_model

# options (a full run's defaults): items, image size, spectral bands, thermal frames, labelled share, acquisition
# seconds and compute watts (energy table), a folder for sample PNGs of the test items (None: none) and how many,
# and overrides of the sorting policy (cmkd.recipes.recycling.policy.DEFAULT_POLICY)
OPTIONS = options_model("recycling", n_items=(int, 3000), size=(int, 16), bands=(int, 64), frames=(int, 36),
                        label_fraction=(float, 0.6), acquisition_s=(float, 0.2), compute_w=(float, 5.0),
                        png_dir=(str | None, None), png_count=(int, 48), policy=(Any, None))
QUICK = {"n_items": 600}  # a quick run's differences
