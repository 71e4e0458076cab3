"""Learning a part on the box, torch-free: what a memory model needs besides the teacher's forward pass."""
