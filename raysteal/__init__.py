"""raysteal: model-stealing attacks on recommender systems, simulated at scale with Ray."""

__version__ = "0.1.0"
