"""The engine: text → tokens → segments → VQ-transformer state → heads → results.

Knows nothing of editors, sockets or LSP, so it can be tested on bare strings and tensors.
"""
