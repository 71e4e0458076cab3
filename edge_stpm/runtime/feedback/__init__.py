"""Feedback from the line, runtime side (torch-free): the good parts' drift (``drift``), good parts
collected with no model (``collect``), reviewed results become data (``dataset``)."""
