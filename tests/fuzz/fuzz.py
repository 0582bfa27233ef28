"""One fuzz target under atheris (libFuzzer): ``python tests/fuzz/fuzz.py TARGET [libFuzzer args]``.

Normally started by ``run.py``, which bounds the time, copies the corpus and keeps the crashes.
The Python of shimpid (``_pure``, ``_common``, the package) is instrumented for coverage; the
extension is run on every input too, and checked against ``_pure`` (see ``fuzz_harness``); its
own coverage counts only when it was built with SanitizerCoverage and libFuzzer's runtime is
preloaded (run.py ``--native`` does both).
``SHIMPID_FUZZ_ORACLE`` names a compiled ``tests/oracle/reference_decode.rs`` to check against.
"""

from __future__ import annotations

import os
import sys

import atheris

# Before anything imports shimpid: only modules imported inside this block are instrumented. The
# harness is too: its model of the reference's stat parse mirrors the extension's C.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports(include=["shimpid", "fuzz_harness"]):
    import fuzz_harness

    import shimpid
    import shimpid._common
    import shimpid._pure
    import shimpid._speedups  # noqa: F401


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in fuzz_harness.TARGETS:
        sys.exit(f"usage: fuzz.py {{{','.join(fuzz_harness.TARGETS)}}} [libFuzzer arguments]")
    target = sys.argv[1]
    check = fuzz_harness.CHECKS[target]
    binary = os.environ.get("SHIMPID_FUZZ_ORACLE")
    oracle = fuzz_harness.start_oracle(binary) if binary else None

    def one_input(data: bytes) -> None:
        check(data, oracle)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
