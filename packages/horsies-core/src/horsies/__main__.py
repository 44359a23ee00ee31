"""`python -m horsies ...`: the same as the `horsies` console script."""

from __future__ import annotations

from horsies.cli import main

if __name__ == "__main__":
    main(prog_name="horsies")
