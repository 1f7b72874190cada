"""dlbc-ray: a blockchain whose consensus is useful deep-learning work, run on Ray."""

__version__ = "0.1.0"
