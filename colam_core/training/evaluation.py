"""One evaluation pass (torchvision's `evaluate`): loss, accuracy and, when asked, the logits ECE needs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import expected_calibration_error


@dataclass
class Evaluation:
    loss: float
    acc: float
    logits: np.ndarray | None = None   # N x C float32 logits z, in the split's order (with_probs only)
    labels: np.ndarray | None = None
    T: float = 1.0                     # the method's output temperature

    def probs(self, T: float | None = None) -> np.ndarray:
        """softmax(z / T): at the method's output temperature by default, or at the T given (1: softmax(z))."""
        z = self.logits.astype(np.float64) / (self.T if T is None else T)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def calibration(self) -> dict:
        """ECE both ways: `test_ece` of softmax(z / T) at the output temperature, `test_ece_T1` of softmax(z)."""
        return {"test_ece": expected_calibration_error(self.probs(), self.labels),
                "test_ece_T1": expected_calibration_error(self.probs(1.0), self.labels)}


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
    n, logits, labels = 0, [], []
    for x, y, _ in data.eval_batches(split, batch_size):
        z = infer(x)
        loss += F.cross_entropy(z / T, y, reduction="sum").double()
        correct += (z.argmax(1) == y).sum()
        n += len(y)
        if with_probs:
            logits.append(z)
            labels.append(y)
    model.train(was_training)
    t = torch.stack([loss, correct, torch.tensor(float(n), dtype=torch.float64, device=dev)])
    strategy.reduce(t)
    out = Evaluation(float(t[0]) / max(int(t[2]), 1), float(t[1]) / max(int(t[2]), 1), T=T)
    if with_probs:
        C = data.info.num_classes
        z = torch.cat(logits) if logits else torch.zeros(0, C, device=dev)
        yy = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=dev)
        out.logits = strategy.gather_cat(z.float()).cpu().numpy()
        out.labels = strategy.gather_cat(yy.long()).cpu().numpy()
    return out


__all__ = ["Evaluation", "evaluate"]
