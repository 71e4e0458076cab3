"""Helpers both sides use, at the bottom of the package, torch-free: the one error type (``errors``), atomic files
(``files``), reading and fitting images (``images``), progress, CPU threads, redacting secrets (``redact``), unpacking
untrusted zips (``safezip``), listening addresses (``bind``). Imports nothing else of edge_stpm: the contract, the
runtime and the training side all build on it."""
