"""The report: its plan (plan.py), its computations (compute.py), the page and its figures.

The package itself is callable: `hs.report(model, tasks=None, out=None, budget=...)` is
`headscope.report.plan.report`, the whole report from Python (the same plan `headscope report`
runs), returning the `Run`.
"""

from __future__ import annotations

import sys
import types


class _CallableReport(types.ModuleType):
    """`headscope.report(...)`: the package called as the function `plan.report`."""

    def __call__(self, *args, **kwargs):
        from headscope.report.plan import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableReport
