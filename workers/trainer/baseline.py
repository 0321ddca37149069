"""The bar a model must clear to have learned anything beyond byte frequencies."""

from __future__ import annotations

import math

import torch

from workers.trainer.data import Corpus


def unigram_val_loss(corpus: Corpus) -> float:
    """Cross-entropy (nats per byte) of the validation split under the training split's byte frequencies.

    Add-one smoothing keeps a byte unseen in training from making the baseline infinite.
    """
    train_counts = torch.bincount(corpus.train.long(), minlength=256).double() + 1.0
    log_p = torch.log(train_counts / train_counts.sum())
    val_counts = torch.bincount(corpus.val.long(), minlength=256).double()
    return float(-(val_counts * log_p).sum() / max(corpus.val.numel(), 1))


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))
