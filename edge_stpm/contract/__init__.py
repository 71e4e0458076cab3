"""The contract between export and every runtime, torch-free: what the artefacts are (``artifacts``, ``schema``), the
one score scale (``scale``), the tiled fit that travels with a model (``tiles``), every option's range (``options``),
TensorRT's parser rules for a graph (``trt_rules``). Built on ``edge_stpm.common`` only."""
