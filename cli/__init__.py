"""vqedit: live model feedback on prose, computed incrementally with a VQ-transformer."""

__version__ = "0.1.0"
