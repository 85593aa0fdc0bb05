"""Training: the VQ student distilled from a dense model (`vqedit train distill`), label heads
(`vqedit train head`) and the evaluation of both (`vqedit eval`)."""
