"""The per-user inference daemon: shared weights, per-document incremental state.

May import the engine; never the LSP. Only its protocol module will know msgpack.
"""
