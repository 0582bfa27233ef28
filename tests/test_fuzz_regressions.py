"""The fuzzers' seeds and every crash they found, replayed through the same checks (both
backends agree, only the documented exceptions): see tests/fuzz/. Needs no atheris."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from _helpers import PURE_ONLY

FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")

if PURE_ONLY:
    pytest.skip(
        "SHIMPID_PURE_PYTHON is set: the fuzz checks compare the extension with _pure",
        allow_module_level=True,
    )

sys.path.insert(0, FUZZ)
import fuzz_harness  # noqa: E402

sys.path.remove(FUZZ)


def inputs(kind: str) -> list:
    found = []
    for target in fuzz_harness.TARGETS:
        directory = os.path.join(FUZZ, kind, target)
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if not name.startswith("."):
                found.append(
                    pytest.param(target, os.path.join(directory, name), id=f"{target}-{name[:16]}")
                )
    return found


SEEDS = inputs("corpus")
CRASHES = inputs("crashes")


def replay(target: str, path: str, oracle=None) -> None:
    with open(path, "rb") as f:
        data = f.read()
    cwd = os.getcwd()
    try:
        fuzz_harness.CHECKS[target](data, oracle)
    finally:
        os.chdir(cwd)  # the writer's checks run in their scratch directory


def test_the_corpus_is_there():
    assert {p.values[0] for p in SEEDS} == set(fuzz_harness.TARGETS)


@pytest.mark.parametrize(("target", "path"), SEEDS)
def test_seed(target, path):
    replay(target, path)


@pytest.mark.parametrize(
    ("target", "path"),
    CRASHES or [pytest.param(None, None, marks=pytest.mark.skip(reason="no crash found yet"))],
)
def test_crash(target, path):
    replay(target, path)


@pytest.mark.parametrize(
    ("target", "path"), [p for p in SEEDS + CRASHES if p.values[0] in ("decode", "stat")]
)
def test_against_the_reference(oracle, target, path):
    replay(target, path, oracle)


def test_paths_that_leave_the_scratch_directory_are_never_written():
    for path in [b"/x", b"../x", b"d/../../x", b"..", b"..\x00/x", b"a/..\x00b", b"//x"]:
        assert not fuzz_harness.confined(path), path
        assert fuzz_harness.writer_input(b"\x01" + path) is None
    assert fuzz_harness.writer_input(b"\x0d" + b"../x") is None  # as a PurePosixPath
    for path in [b"x", b"d/x", b"..x", b"x..", b"./x", b"...", b""]:
        assert fuzz_harness.confined(path), path


@pytest.fixture(autouse=True, scope="module")
def _scratch():
    yield
    for path in fuzz_harness._scratch.values():
        shutil.rmtree(path, ignore_errors=True)
    fuzz_harness._scratch.clear()
    fuzz_harness._writer_scratch.clear()
