"""The heads that turn the frozen teacher's pyramid into an anomaly map: STPM (student–teacher difference, in
``training.model``) and the memory bank (nearest neighbour over good patches, ``memory``), alone or combined."""
