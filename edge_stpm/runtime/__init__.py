"""The runtime side — what a box on the line installs, torch-free: backends behind one interface (``backends``),
the inspector, the camera loop with its sources and sinks (``loop``), overlays, ``infer``, Triton serving. It
imports the contract, never the training side (the one door: a checkpoint is opened through
``training.torch_backend``, lazily, only where PyTorch is installed)."""
