"""Runs each fuzz target for a bounded time: ``python tests/fuzz/run.py --seconds 60 [target ...]``.

Each target (all of them by default: decode, reader, stat, writer) runs under atheris/libFuzzer
for ``--seconds`` of fuzzing, starting from a copy of ``tests/fuzz/corpus/<target>/`` and of the
saved crashes (the repository's corpus is never modified). One line per target:

    fuzz decode: 1234567 executions in 60.4 s, 0 crashes

A crash (a failed check, an unexpected exception, a crash or a hang in the extension) is saved
to ``tests/fuzz/crashes/<target>/``, where ``tests/test_fuzz_regressions.py`` replays it, and the
run exits non-zero. shimpid must be importable with its extension: from a checkout after
``python setup.py build_ext --inplace`` with ``PYTHONPATH`` set to it, or installed.

``--native`` also measures the extension's own coverage: it builds a copy of the extension with
clang's SanitizerCoverage (``-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp``) in a
temporary directory and preloads libFuzzer's runtime (``libclang_rt.fuzzer_no_main``), which
atheris's own core does not export to other extensions. It needs a checkout (setup.py), clang and
its runtime (Debian: ``clang libclang-rt-14-dev``, or ``clang-14`` + ``libclang-rt-14-dev``).
The Rust reference (``tests/oracle/``) is compiled and checked against when rustc exists
(``--oracle`` makes it required, ``--no-oracle`` skips it).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TARGETS = ("decode", "reader", "stat", "writer")
# The longest input each target is given: a reader input passes the 4 KiB file limit, a writer's
# path passes PATH_MAX (where the extension builds the temporary name on the stack).
MAX_LEN = {"decode": 1024, "reader": 4200, "stat": 1024, "writer": 4200}
LINK = ["-Wl,--no-whole-archive", "-lstdc++", "-lpthread", "-lm"]  # what libFuzzer links to
ARTIFACTS = ("crash-", "timeout-", "oom-", "leak-")


def require_extension() -> str:
    try:
        shimpid = importlib.import_module("shimpid")
        importlib.import_module("shimpid._speedups")
    except ImportError as err:
        sys.exit(
            f"fuzz: shimpid with its extension is not importable ({err}): build it in place "
            "(python setup.py build_ext --inplace) and set PYTHONPATH to the checkout, or "
            "install it"
        )
    return os.path.dirname(shimpid.__file__)


def find_clang() -> str:
    for name in ("clang", "clang-14", "clang-15", "clang-16", "clang-17", "clang-18", "clang-19"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("fuzz: --native needs clang (Debian: apt-get install clang libclang-rt-14-dev)")


def build_native(work: str) -> tuple[str, str]:
    """(directory to put first on PYTHONPATH, libFuzzer runtime to preload)."""
    if not os.path.exists(os.path.join(REPO, "setup.py")):
        sys.exit("fuzz: --native builds from a checkout (setup.py not found)")
    clang = find_clang()
    resource = subprocess.run(
        [clang, "--print-resource-dir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    runtime = glob.glob(os.path.join(resource, "lib", "*", "libclang_rt.fuzzer_no_main*.a"))
    runtime = [r for r in runtime if "x86_64" in r or "aarch64" in r] or runtime
    if not runtime:
        sys.exit(f"fuzz: no libclang_rt.fuzzer_no_main under {resource} (libclang-rt-*-dev)")
    tree = os.path.join(work, "native")
    shutil.copytree(
        os.path.join(REPO, "shimpid"),
        os.path.join(tree, "shimpid"),
        ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"),
    )
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "NOTICE", "MANIFEST.in"):
        if os.path.exists(os.path.join(REPO, name)):
            shutil.copy(os.path.join(REPO, name), tree)
    env = dict(
        os.environ,
        CC=clang,
        LDSHARED=f"{clang} -shared",
        CFLAGS="-g -fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp",
        SHIMPID_REQUIRE_EXTENSION="1",
    )
    env.pop("SHIMPID_NO_EXTENSIONS", None)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    preload = os.path.join(work, "libfuzzer_no_main.so")
    subprocess.run(
        [clang, "-shared", "-fPIC", "-o", preload, "-Wl,--whole-archive", runtime[0], *LINK],
        check=True,
    )
    return tree, preload


def build_oracle(work: str, required: bool) -> str | None:
    rustc = shutil.which("rustc")
    if rustc is None:
        if required:
            sys.exit("fuzz: --oracle needs rustc")
        print("fuzz: rustc not found: running without the Rust reference", flush=True)
        return None
    binary = os.path.join(work, "reference_decode")
    source = os.path.join(os.path.dirname(HERE), "oracle", "reference_decode.rs")
    subprocess.run([rustc, "--edition", "2021", "-O", source, "-o", binary], check=True)
    return binary


def run_target(target: str, seconds: int, work: str, env: dict[str, str], verbose: bool) -> bool:
    """Fuzzes one target; prints its line; True if it found nothing."""
    corpus = os.path.join(work, target, "corpus")
    artifacts = os.path.join(work, target, "artifacts")
    os.makedirs(artifacts)
    seeds = os.path.join(HERE, "corpus", target)
    crashes = os.path.join(HERE, "crashes", target)
    if os.path.isdir(seeds):
        shutil.copytree(seeds, corpus)
    else:
        os.makedirs(corpus)
    for name in os.listdir(crashes) if os.path.isdir(crashes) else []:
        if not name.startswith("."):
            shutil.copy(os.path.join(crashes, name), corpus)
    log = os.path.join(work, target, "log")
    command = [
        sys.executable,
        os.path.join(HERE, "fuzz.py"),
        target,
        corpus,
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[target]}",
        "-timeout=30",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
    ]
    started = time.monotonic()
    with open(log, "wb") as out:
        rc = subprocess.run(command, cwd=work, env=env, stdout=out, stderr=out).returncode
    elapsed = time.monotonic() - started
    with open(log, errors="replace") as f:
        text = f.read()
    found = re.findall(r"stat::number_of_executed_units: (\d+)", text)
    executions = found[-1] if found else "?"
    coverage = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", text, re.M)
    saved = []
    for name in sorted(os.listdir(artifacts)):
        if name.startswith(ARTIFACTS):
            os.makedirs(crashes, exist_ok=True)
            shutil.copy(os.path.join(artifacts, name), os.path.join(crashes, name))
            saved.append(os.path.join(crashes, name))
    failed = rc != 0 or bool(saved)
    detail = f" (coverage {coverage[-1][0]}, features {coverage[-1][1]})" if coverage else ""
    print(
        f"fuzz {target}: {executions} executions in {elapsed:.1f} s, {len(saved)} crashes{detail}",
        flush=True,
    )
    if failed or verbose:
        print(text[-6000:] if not verbose else text, flush=True)
        for path in saved:
            print(f"fuzz {target}: crash input saved to {os.path.relpath(path, REPO)}", flush=True)
        if rc != 0 and not saved:
            print(f"fuzz {target}: the fuzzer exited with {rc} and saved no input", flush=True)
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="target", help=", ".join(TARGETS))
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--native", action="store_true", help="the extension's coverage too")
    oracle = parser.add_mutually_exclusive_group()
    oracle.add_argument("--oracle", action="store_true", help="require the Rust reference")
    oracle.add_argument("--no-oracle", action="store_true", help="skip the Rust reference")
    parser.add_argument("--verbose", action="store_true", help="print libFuzzer's whole output")
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}: choose from {', '.join(TARGETS)}")
    try:
        importlib.import_module("atheris")
    except ImportError:
        sys.exit("fuzz: atheris is not installed (pip install atheris)")
    where = require_extension()
    print(f"fuzz: shimpid from {where}", flush=True)
    ok = True
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with (
        tempfile.TemporaryDirectory(prefix="shimpid-fuzz-") as work,
        tempfile.TemporaryDirectory(prefix="shimpid-fuzz-", dir=shm) as scratch,
    ):
        env = dict(os.environ, SHIMPID_FUZZ_SCRATCH=scratch)  # the targets' files, on tmpfs
        env.pop("SHIMPID_PURE_PYTHON", None)
        if args.native:
            tree, preload = build_native(work)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
            env["LD_PRELOAD"] = " ".join(filter(None, [preload, env.get("LD_PRELOAD")]))
            print(f"fuzz: extension built with coverage in {tree}", flush=True)
        if not args.no_oracle:
            binary = build_oracle(work, args.oracle)
            if binary:
                env["SHIMPID_FUZZ_ORACLE"] = binary
        for target in targets:
            ok = run_target(target, args.seconds, work, env, args.verbose) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
