"""The houston recipe (real data, Houston 2013): see :mod:`cmkd.recipes.houston.recipe`."""
