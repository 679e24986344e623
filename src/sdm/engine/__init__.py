"""Training and evaluation: the embedding model, the MLRC fold loop, experiments, test results."""
