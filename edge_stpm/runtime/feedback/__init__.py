"""Feedback from the line: reviewed results become data (``dataset``)."""
