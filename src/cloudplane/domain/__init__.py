"""Domain rules without I/O: errors, states, value objects."""
