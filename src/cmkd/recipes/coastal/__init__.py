"""Coastal recipes: sea-level prediction from sparse gauges, distilled from dense satellite / neighbour-gauge
teachers. ``scene`` is the SYNTHETIC generator, ``harmonic`` the classical tidal baseline, ``real`` the
Rijkswaterstaat tide-gauge recipe (``coastal-real``) and ``recipe`` the synthetic recipe (``coastal``)."""
