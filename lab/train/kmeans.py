"""Fitting codebooks by k-means on recorded head outputs.

Layers are fitted in order: the head outputs of layer l are recorded with layers < l already
quantized, so each codebook sees the activations it will really quantize.
"""

import torch

from vqedit.engine.model import VQTransformer


def kmeans(x: torch.Tensor, k: int, iters: int = 25, seed: int = 0) -> torch.Tensor:
    """k-means++ seeding, then Lloyd iterations. x (N, Dg) → centroids (k, Dg).

    With fewer distinct points than k, the spare centroids repeat points: duplicates are never
    chosen over their twin by argmin, so they are harmless.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one activation")
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(n, (1,), generator=gen)]  # (1, Dg)
    for _ in range(1, k):
        d2 = torch.cdist(x, centroids).min(1).values.pow(2)  # (N,)
        if d2.sum() <= 0:
            pick = torch.randint(n, (1,), generator=gen)
        else:
            pick = torch.multinomial(d2, 1, generator=gen)
        centroids = torch.cat([centroids, x[pick]])  # (c+1, Dg)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)  # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # (k, Dg)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)  # (k, 1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


@torch.no_grad()
def fit_codebooks(model: VQTransformer, inputs: list[torch.Tensor], iters: int = 25,
                  seed: int = 0) -> None:
    """Fit every layer's codebooks on the head outputs of `inputs` (each ids (1, T))."""
    xs = [model.embed(ids, torch.arange(ids.shape[1], dtype=torch.float64).unsqueeze(0))
          for ids in inputs]  # each (1, T, D)
    for layer, block in enumerate(model.blocks):
        n_codes, size, width = block.codebook.codewords.shape
        groups = torch.cat([block.head_outputs(x).reshape(-1, n_codes, width)
                            for x in xs])  # (N, Q, Dg)
        fitted = [kmeans(groups[:, g], size, iters, seed + 1000 * layer + g)
                  for g in range(n_codes)]
        block.codebook.codewords.copy_(torch.stack(fitted))  # (Q, K, Dg)
        block.codebook.fitted.fill_(True)
        xs = [block(x, quantize=True).x for x in xs]
