"""Text and its edits: the leaf every layer shares (the edit type, line positions, what of a
Markdown text is prose). It imports nothing of vqedit."""
