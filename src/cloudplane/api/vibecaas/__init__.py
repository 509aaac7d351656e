"""The VibeCaaS face at /api/v1: bare objects, errors as `{"error": {"code", "message", "details"}}`."""
