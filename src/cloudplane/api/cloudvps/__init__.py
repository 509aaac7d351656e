"""The CloudVPS Pro face at /api/v1: `{"success", "data"}` envelopes, errors as `{"success": false, "error"}`."""
