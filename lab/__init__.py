"""The lab: what builds and measures vqedit, never what a user's editor runs.

Training and evaluating the student and its heads (`train/`), benchmarks against the
alternatives a user has (`bench/`), edit logs made from articles or git histories (`edits/`),
replaying them through the engine, a daemon or the language server (`replay/`), and the checks
they share (`verify`, the BBC `corpus`). The lab may import every layer; no layer imports it.
"""
