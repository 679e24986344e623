"""Datasets, class splits, image transforms and the resized-image cache."""
