"""HTTP faces: each owns its paths, schemas and envelope, and calls the services."""
