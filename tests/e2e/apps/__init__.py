"""Apps started by the end-to-end tests as real ``horsies worker`` subprocesses.

Each module builds its app with ``create_app(database_url)``; the module-level ``app`` reads the URL
from ``HORSIES_E2E_DATABASE_URL`` (set by the tests in the worker's environment), and the test
process builds its own producer app for the same database with ``create_app(url)``.
"""
