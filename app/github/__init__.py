"""GitHub, as Retrain speaks to it: the client (REST, GraphQL, check runs, commits), App auth and
installation tokens, the retry and rate-limit rules, and releases. Beside the planners, below the texts; it
reads only the process settings."""
