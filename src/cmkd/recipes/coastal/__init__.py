"""The coastal recipe: sea-level prediction from sparse gauges, distilled from dense satellite / neighbour-gauge
teachers. ``scene`` is the SYNTHETIC generator, ``harmonic`` the classical tidal baseline (also used by
:mod:`cmkd.recipes.coastal_real`), ``recipe`` the recipe (``coastal``), ``decisions`` and ``forecast`` its
domain outputs."""
