"""The model, its data and its training loop: plain PyTorch, resumable to the bit.

It imports nothing outside `workers.trainer` (no app, Redis, GitHub or Celery), so it runs and tests alone
and a benchmark can time it against a minimal loop.
"""
