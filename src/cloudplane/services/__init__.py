"""Use cases. Every rule lives here: tenancy, state checks, validation; faces call these and nothing else."""
