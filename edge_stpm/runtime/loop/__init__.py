"""The camera loop: frame sources, overlays and the run loop."""
