"""The bar a model must clear to have learned anything beyond token frequencies."""

from __future__ import annotations

import math

import torch

from workers.trainer.data import Corpus


def unigram_val_loss(corpus: Corpus) -> float:
    """Cross-entropy of the validation split under the training split's token frequencies, in nats per byte
    (the unit every val loss is in, see data.bits_per_byte).

    Add-one smoothing keeps a token unseen in training from making the baseline infinite.
    """
    vocab = corpus.tokenizer.vocab_size
    train_counts = torch.bincount(corpus.train.long(), minlength=vocab).double() + 1.0
    log_p = torch.log(train_counts / train_counts.sum())
    val_counts = torch.bincount(corpus.val.long(), minlength=vocab).double()
    val_bytes = float((val_counts * corpus.tokenizer.token_bytes.double()).sum())
    return float(-(val_counts * log_p).sum() / max(val_bytes, 1.0))


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))
