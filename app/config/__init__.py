"""What Retrain is told: the process settings (environment), a repository's `.github/retrain.yml`, the
operator's limits on what one repository may spend, and the `data.include` globs. Pure validation, no
I/O; every other room of `app/` may read it."""
