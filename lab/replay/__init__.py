"""`vqedit replay`: edit logs run through the engine, a daemon or the language server (through
an LSP client of our own, `driver`), with latency, operations and verification per edit."""
