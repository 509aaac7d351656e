"""The native LetsCloud API: the dialect LetsCloud's own clients speak at `/api`, chosen by its `api-token` header."""
