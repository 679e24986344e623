"""Training and evaluation: config -> objects (build), checks before a run (preflight), one step,
the MLRC fold loop, experiment folders, and the numbers of test evaluation."""
