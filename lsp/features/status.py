"""`vqedit/status` (a notification of ours): the document's label for status lines.

Params: `{uri, version, state, label, score, resultsVersion, message, cost, failedVersion}`;
`state` is the model's ("loading", "ready", "error"), or "error" for a document whose newest
version the backend failed to compute: then `message` is the backend's reason and
`failedVersion` the client's version that failed (null otherwise); `label`/`score` are the
document's best label and its score from the newest results, which may be a few keystrokes
behind `version` while the user types (null while there are none), and `resultsVersion` is the
version they were computed for; `cost` is what computing those results took, as the daemon's
results carry it (null when unknown); `uri` and `version` are null when the state changes with
no document open.
"""

import dataclasses
from typing import Any

from vqedit.lsp.backend import ModelState
from vqedit.lsp.documents import Document

METHOD = "vqedit/status"


def params(document: Document | None, model: ModelState) -> dict[str, Any]:
    results = document.results if document is not None else None
    label = results.label if results is not None else None
    failure = document.failure if document is not None else None
    return {
        "uri": document.uri if document else None,
        "version": document.version if document else None,
        "state": "error" if failure else model.state,
        "label": label,
        "score": results.scores.get(label) if label is not None else None,
        "resultsVersion": document.results_version if results is not None else None,
        "message": failure.message if failure else model.message,
        "cost": dataclasses.asdict(results.cost) if results and results.cost else None,
        "failedVersion": document.versions.get(failure.version) if failure else None}
