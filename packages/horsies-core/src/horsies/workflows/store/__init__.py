"""The workflow engine's I/O: the workflow and node rows, and the transactions that advance them.

The decisions themselves (which nodes become READY or SKIPPED, when a workflow ends and with what)
are pure functions in :mod:`horsies.workflows.engine`. This package loads the snapshot they decide
on (``snapshot``), runs them and writes the outcome (``session``), decides outside every lock what
needs user code (``decisions``), and offers the operations (``operations``), the reads (``reads``)
and the object the broker calls when tasks finish (``hooks``).
"""
