"""horsies: a PostgreSQL-backed task queue."""
