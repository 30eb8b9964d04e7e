"""The minerals recipe (SYNTHETIC scene): see :mod:`cmkd.recipes.minerals.recipe`."""
