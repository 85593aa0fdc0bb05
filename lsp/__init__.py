"""The language server: editor text changes in, diagnostics and hover out.

Talks to the engine only through the daemon protocol, or the same interface in-process.
"""
