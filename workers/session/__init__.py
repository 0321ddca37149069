"""One training session from start to commit, the same for workers and local mode: plan it (config,
registry, corpus at one commit), train it, store the weights and commit the progress files, plus the
pure pieces those steps use (checkpoint registry, history, loss chart, snapshot selection).

It may import `app` (config, errors, the GitHub client) and `workers.trainer`; never `workers.jobs`,
`workers.coordination` or Celery. The run's lease reaches a session only through the `Controls` it is
given (`session.RunLease` is the Protocol it sees), so local mode runs the same code with none.
"""
