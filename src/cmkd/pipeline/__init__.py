"""The run pipeline: ``run(config)`` as named stages over one RunState, the output folder, tuning and sensor
selection."""
