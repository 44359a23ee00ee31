"""The workflow apps of the end-to-end tests, imported under the module names their workers use.

A worker imports ``tests.e2e.apps.wf_control`` (or ``wf_patterns``, ``traced``) and re-imports a
workflow's definitions and conditions by the module name recorded on its row, so the test process
must import the apps under those same names: ``from wf_apps import wf_patterns as wf``.
"""

from __future__ import annotations

import sys

from process_harness import ROOT

if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
from tests.e2e.apps import traced, wf_control, wf_patterns

__all__ = ["traced", "wf_control", "wf_patterns"]
