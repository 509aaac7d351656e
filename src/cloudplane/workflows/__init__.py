"""Durable workflows: every long action is an Operation whose workflow survives a crash of the process running it."""
