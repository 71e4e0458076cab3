"""The contract below both sides, torch-free: what the artefacts are (``artifacts``, ``schema``), how an image is
read and fitted (``images``), every option's range (``options``), errors, atomic files, threads, progress."""
