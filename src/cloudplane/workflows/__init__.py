"""Durable workflows (DBOS): every long action survives a crash of the process running it."""
