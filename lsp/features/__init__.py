"""One module per LSP method (its docstring names the method), its handler a plain function
(`lsp/app.py` binds each to its method); `diagnostics` and `status` build what the server
sends."""
