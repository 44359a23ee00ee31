"""Task definition, sending, results retrieval, lifecycle states and retry policy."""
