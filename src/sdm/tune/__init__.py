"""Hyperparameter search (``sdm tune``): search spaces and Optuna studies of experiments."""
