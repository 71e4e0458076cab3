"""Learning a part on the box, torch-free, from data to model: good parts collected with no model (``collect``),
reviewed results as a dataset (``dataset``), then what a memory model needs besides the teacher's forward pass
(``fit``, ``update``, ``thresholds``, ``coreset`` …)."""
