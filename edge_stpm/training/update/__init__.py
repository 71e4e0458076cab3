"""Updating a trained model from reviewed parts, training side: reviewed good parts into the memory (``memory``),
old vs new on the reviewed set (``compare``). The fine-tune is ``train --init-from``."""
