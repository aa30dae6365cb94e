"""One evaluation pass (torchvision's `evaluate`): loss, accuracy and, when asked, the probabilities ECE needs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Evaluation:
    loss: float
    acc: float
    probs: np.ndarray | None = None    # N x C softmax(z / T), in the split's order (with_probs only)
    labels: np.ndarray | None = None


@torch.no_grad()
def evaluate(model, infer, data, split: str, *, batch_size: int, T: float, strategy,
             with_probs: bool = False) -> Evaluation:
    """Un-augmented pass over `split` in eval mode; the loss is CE at the method's output temperature T.

    Under data-parallel training each rank runs its share (`data` is the strategy's view) and the sums are
    reduced; the probabilities are gathered back into the split's order."""
    strategy.sync_buffers(model)
    was_training = model.training
    model.eval()
    dev = strategy.device
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.float64, device=dev)
    n, probs, labels = 0, [], []
    for x, y, _ in data.eval_batches(split, batch_size):
        z = infer(x)
        loss += F.cross_entropy(z / T, y, reduction="sum").double()
        correct += (z.argmax(1) == y).sum()
        n += len(y)
        if with_probs:
            probs.append(F.softmax(z / T, 1))
            labels.append(y)
    model.train(was_training)
    t = torch.stack([loss, correct, torch.tensor(float(n), dtype=torch.float64, device=dev)])
    strategy.reduce(t)
    out = Evaluation(float(t[0]) / max(int(t[2]), 1), float(t[1]) / max(int(t[2]), 1))
    if with_probs:
        C = data.info.num_classes
        p = torch.cat(probs) if probs else torch.zeros(0, C, device=dev)
        yy = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=dev)
        out.probs = strategy.gather_cat(p.float()).cpu().numpy()
        out.labels = strategy.gather_cat(yy.long()).cpu().numpy()
    return out


__all__ = ["Evaluation", "evaluate"]
