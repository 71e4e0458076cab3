"""A Triton Inference Server model repository from a bundle (``edge-stpm triton-repo``): ``writer`` writes it;
``model`` is the Python-backend model it copies there as ``1/model.py`` (run by the server, never imported here).
The client side, a model served by Triton, is ``runtime/backends/triton_backend.py``."""
