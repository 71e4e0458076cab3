"""Feedback on the training side: reviewed good parts into the memory, a fine-tune from a checkpoint, old vs new."""
