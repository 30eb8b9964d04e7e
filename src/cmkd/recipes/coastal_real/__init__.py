"""The coastal-real recipe (real Dutch tide gauges): see :mod:`cmkd.recipes.coastal_real.recipe`."""
