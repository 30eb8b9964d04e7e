"""Recipe ``microgrid`` (SYNTHETIC): simulator, perfect-foresight oracle, controllers; see :mod:`.recipe`."""
