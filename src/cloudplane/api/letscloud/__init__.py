"""The LetsCloud face at /api: the 20 operations of the LetsCloud GPT-Actions OpenAPI document."""
