"""pytest plugin for the memory-safety legs (.ci/asan, .ci/debug-python): the extension only.

Those legs exist to exercise the C extension under instruments that slow everything down, so
they drop the ``impl=pure`` half of every ``impl`` test (the pure backend runs no C of
shimpid's: the ordinary tox legs test it). Everything else stays, including the tests that
take no ``impl`` (the C-API extension, the comparisons of both backends, the command line on
the default backend, which is the extension). Selected by parameter, not by ``-k``: a ``-k``
expression matches names too, and would also drop e.g. a test named ``..._pure_...``.

Use: ``PYTHONPATH=.ci pytest -p extension_only``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("impl") == "pure":
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return "extension_only: the impl=pure tests are deselected (.ci/extension_only.py)"
