"""Benchmarks that print JSON (`vqedit bench ...`), each against the best alternative measured
in the same run: dense recompute with torch and ONNX Runtime, and the paragraph cache."""
