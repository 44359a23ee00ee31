"""The DAG workflow engine: nodes, specs, class-based definitions, handles and the pure engine.

The public names are re-exported from :mod:`horsies`; import them from there.
"""
