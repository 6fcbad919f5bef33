"""feedstore: the data-collection and feature-store layer of a feed ranker."""

__version__ = "0.1.0"
