"""The deep-learning side of dlbc-ray: datasets, nets, the Lightning system, training and scoring.

Submodules import torch; import them only where torch is welcome (miners, validators).
"""

__all__ = ["data", "evaluate", "nets", "system", "training", "weights"]
