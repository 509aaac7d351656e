"""Routes two documents share under /api/v1 (sign-in, admin users) plus API keys: both request shapes accepted,
replies a superset of both, errors in the CloudVPS envelope (which also satisfies VibeCaaS)."""
