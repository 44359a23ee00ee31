"""SQL of the broker, as named constants per domain (never assembled from user input)."""
