"""Networks: encoders, the multimodal net, ensembles, loss terms, checkpoints."""
