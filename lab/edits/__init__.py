"""Edit logs to replay: atomic edits typed into articles or files (`vqedit edits synth`), and a
file's git history as word edits (`vqedit edits from-git`)."""
