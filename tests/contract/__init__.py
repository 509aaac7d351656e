"""The driver contract suite: one set of tests run against every provider this machine can run."""
