"""Planning and executing rollbacks."""
