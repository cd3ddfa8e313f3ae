"""How sure is the model? Reliability bins, expected calibration error, temperature scaling.

Notebook 09 shows the same code in its cells (tagged ``twin-reliability`` and
``twin-temperature``); ``tests/test_lesson_09.py`` checks that both agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BINS = 15          # equal-width confidence bins, as in Guo et al. (2017), "On calibration..."


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> dict:
    """Per confidence bin ``(i / bins, (i + 1) / bins]``: how many predictions fall in it, their
    mean confidence and their accuracy (NaN for an empty bin); and the expected calibration error
    ``ece``, the count-weighted mean gap between accuracy and confidence."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).double()
    confidence = confidence.double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1])          # bin i: edges[i] < c <= edges[i + 1]
    count = torch.bincount(which, minlength=bins).double()
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    ece = (acc_sum - conf_sum).abs().sum() / len(labels)
    return {"edges": edges, "count": count, "confidence": conf_sum / count,
            "accuracy": acc_sum / count, "ece": ece.item()}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature ``T > 0`` that minimizes the cross-entropy of ``logits / T`` on these
    (held-out) images: a single number, so the predicted class never changes."""
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    z = logits.double()

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.exp().item()


def scores(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
           bins: int = BINS) -> dict:
    """Accuracy, negative log-likelihood and ECE of ``logits / temperature``."""
    scaled = logits.double() / temperature
    probs = F.softmax(scaled, dim=1)
    return {"accuracy": (probs.argmax(1) == labels).double().mean().item(),
            "nll": F.cross_entropy(scaled, labels).item(),
            "ece": reliability(probs, labels, bins)["ece"]}
