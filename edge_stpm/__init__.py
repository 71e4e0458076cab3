"""edge-stpm: real-time visual inspection with Student-Teacher Feature Pyramid Matching."""

__version__ = "0.1.0"
