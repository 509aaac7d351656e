"""The GPU Cloud Manager face: providers, offer search and GPU instances under /api/v1, in the
`{"success", "message", "data"}` envelope, errors as `{"success": false, "error": "..."}`."""
