"""From model states to results: pooled embeddings and label heads.

The pooled embedding of a document is the mean of the final states of all its tokens (special
tokens included, as all-MiniLM-L6-v2 was trained), over all its segments, L2-normalised. It is a
sum divided by a count, so it can later be kept incrementally.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .document import Document
from .model import VQTransformer


@torch.no_grad()
def segment_states(model: VQTransformer, doc: Document) -> list[torch.Tensor]:
    """Final hidden states of every segment, each (T_s, D), by a full forward pass.

    Codebooks are used when fitted; a model imported without codebooks runs dense.
    """
    states = []
    for segment in doc.segments:
        ids = torch.tensor([doc.model_input(segment)])  # (1, T_s)
        states.append(model(ids, quantize=model.quantizable).hidden[0])  # (T_s, D)
    return states


def pooled(states: list[torch.Tensor]) -> torch.Tensor:
    """Mean over every token of every segment, L2-normalised. (D,)"""
    if not states:
        raise ValueError("nothing to pool: the document has no tokens")
    total = torch.stack([s.sum(0) for s in states]).sum(0)  # (D,)
    count = sum(s.shape[0] for s in states)
    return F.normalize(total / count, dim=0)


@dataclass(frozen=True)
class Classification:
    label: str  # the best-scoring label
    scores: dict[str, float]  # every label's score, best first


class ZeroShotHead:
    """Labels given by name (or a short description): the nearest label embedding wins.

    Scores are cosine similarities between the document's pooled embedding and each label's.
    """

    def __init__(self, labels: list[str], prototypes: torch.Tensor) -> None:
        if len(labels) != prototypes.shape[0]:
            raise ValueError(f"{len(labels)} labels but {prototypes.shape[0]} prototypes")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        self.labels = labels
        self.prototypes = F.normalize(prototypes, dim=1)  # (N, D)

    def classify(self, embedding: torch.Tensor) -> Classification:
        sims = (self.prototypes @ embedding).tolist()  # (N,)
        ranked = sorted(zip(self.labels, sims, strict=True), key=lambda kv: -kv[1])
        return Classification(ranked[0][0], {label: round(s, 6) for label, s in ranked})
