"""Rules turn query results into verdicts with hold windows."""
