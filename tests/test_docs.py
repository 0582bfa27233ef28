"""Every code example in the README and the documentation runs as written.

- ``python`` blocks: each page's blocks run in order, as one session (a later block uses what an
  earlier one made), in a new interpreter that is pid 1 of a pid namespace of its own (the
  examples signal processes), in an empty directory, on each backend. A failure names the page
  and the line of the block.
- ``sh`` blocks: an operator's commands (``shimpid``, ``kill``) run, each page's as one bash
  session with ``set -e``, in a pid namespace, on each backend. Commands a test cannot run here
  (installs, tox) must be ones CI runs: found verbatim in ``.ci/run``, or ``tox -e ENV`` for an
  environment ``tox.ini`` defines.
- ``text`` blocks are output and layouts, not code. Any other language fails the test: a new
  kind of example needs a rule here first.

The pages are the repository's (``README.md``, ``CONTRIBUTING.md``, ``docs/**/*.md``), found
from this file; a checkout without them (an installed wheel's tests) skips.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import require_or_skip, run_in_pid_namespace

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [ROOT / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    + list((ROOT / "docs").rglob("*.md")),
)
PAGES = [page for page in PAGES if "_build" not in page.parts and page.is_file()]
# A block: a line of three backticks and its language, at the margin, to the next such line.
FENCE = re.compile(r"^```([\w{}-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Any line that opens or closes a fence, however written: each must belong to a FENCE match.
ANY_FENCE = re.compile(r"^[ \t>]*(```|~~~)", re.MULTILINE)
# What each page's examples print, at least (a forked spawner that fails prints nothing here).
EXPECTED = {
    "README.md": [(r"Verified\(pid=\d+\)", 3), (r"^removed ", 3)],
    "docs/guide/spawning.md": [(r"Verified\(pid=\d+\)", 1)],
    "docs/guide/run-directory.md": [(r"^stale: .*old\.pid$", 1)],
    "docs/guide/single-instance.md": [(r"pid file is locked by process \d+", 1)],
}


def blocks(page: Path, language: str) -> list[tuple[int, str]]:
    """``(line, code)`` of each ``language`` block of ``page``, ``line`` the code's first."""
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start(2)) + 1, match.group(2))
        for match in FENCE.finditer(text)
        if match.group(1) == language
    ]


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_pages_are_there():
    if not (ROOT / "docs" / "index.md").is_file():
        require_or_skip("no docs/ beside the tests: not a checkout of the repository")
    assert len(PAGES) > 10


def test_every_fence_is_a_block_the_tests_see():
    """A fence the pattern does not see (indented, ``~~~``, unclosed) would hide an example."""
    unseen = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        seen = set()
        for match in FENCE.finditer(text):
            seen.add(match.start())
            seen.add(text.rindex("\n", 0, match.end()) + 1)
        for fence in ANY_FENCE.finditer(text):
            if fence.start() not in seen:
                unseen.append(f"{_name(page)}:{text.count(chr(10), 0, fence.start()) + 1}")
    assert not unseen, "fences the tests do not see (write them at the margin, with ```)"


def test_every_block_is_of_a_known_kind():
    known = {"python", "sh", "text", "{toctree}", "{include}", "{bench-table}", "{bench-machine}"}
    found = {
        f"{_name(page)}: {match.group(1) or '(none)'}"
        for page in PAGES
        for match in FENCE.finditer(page.read_text(encoding="utf-8"))
        if match.group(1) not in known
    }
    assert not found, "blocks of no known kind (give them a language this test knows)"


PYTHON_PAGES = [page for page in PAGES if blocks(page, "python")]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_name)
def test_python_examples_run(page, impl, tmp_path):
    backend = "python" if impl.__name__.endswith("_pure") else "cython"
    session = [(_name(page), line, code) for line, code in blocks(page, "python")]
    # Warnings shown as a debug build shows them (a Popen dropped while its child runs...).
    script = f"""
import os, sys, warnings
warnings.simplefilter("default")
os.chdir({str(tmp_path)!r})
sys.path[:0] = {[p for p in sys.path if p]!r}
os.environ["SHIMPID_PURE_PYTHON"] = {"1" if backend == "python" else "0"!r}
import shimpid
assert shimpid.BACKEND == {backend!r}, shimpid.BACKEND
namespace = {{"__name__": "__main__"}}
for page, line, code in {session!r}:
    # Blank lines first, so that a traceback gives the line in the page.
    exec(compile("\\n" * (line - 1) + code, page, "exec"), namespace)
print("examples ran:", len({session!r}))
"""
    result = run_in_pid_namespace(script, timeout=60)
    assert result.returncode == 0, f"{_name(page)}:\n{result.stdout}\n{result.stderr}"
    assert f"examples ran: {len(session)}" in result.stdout
    # Nothing on stderr: a traceback in a process an example forks would show only there.
    assert result.stderr == "", result.stderr
    for pattern, count in EXPECTED.get(_name(page), []):
        found = re.findall(pattern, result.stdout, re.MULTILINE)
        assert len(found) == count, (pattern, result.stdout)


def _tox_envs() -> set[str]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "tox.ini")
    envs = {section.split(":", 1)[1] for section in config.sections() if ":" in section}
    envs |= {"ext", "pure", "bench", "bench-short", "docs"}
    return {env for env in envs if not env.startswith(".")} | {
        f"py3{v}-{kind}" for v in range(10, 16) for kind in ("ext", "pure")
    }


SH_PAGES = [page for page in PAGES if blocks(page, "sh")]


@pytest.mark.parametrize("page", SH_PAGES, ids=_name)
def test_shell_examples_are_what_ci_runs(page):
    if not (ROOT / ".ci" / "run").is_file():
        require_or_skip("no .ci/run beside the tests (an sdist): nothing to check against")
    ci_text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # Whole commands only: each line of .ci/run, and each command it runs with sh -c '...'.
    ci = {line.strip() for line in ci_text.splitlines()}
    ci |= set(re.findall(r"sh -c '([^']+)'", ci_text))
    envs = _tox_envs()
    unchecked = []
    for line, code in blocks(page, "sh"):
        for offset, command in enumerate(code.splitlines()):
            command = command.split("  #", 1)[0].strip()
            if not command or command.startswith("#") or command in ci or _runs_here(command):
                continue
            tox = re.fullmatch(
                r"(?:python3 -m pip install tox && )?python3 -m tox -e ([\w,.-]+)", command
            )
            if tox and all(env in envs for env in tox.group(1).split(",")):
                continue
            unchecked.append(f"{_name(page)}:{line + offset}: {command}")
    assert not unchecked, "commands neither CI nor tox.ini runs:\n" + "\n".join(unchecked)


def _runs_here(command: str) -> bool:
    """A shell example the tests run: an operator's command (``shimpid``, ``kill``)."""
    return command.split()[0] in ("shimpid", "kill")


SESSION_PAGES = [
    page
    for page in SH_PAGES
    if any(_runs_here(line) for _, code in blocks(page, "sh") for line in code.splitlines())
]


@pytest.mark.parametrize("page", SESSION_PAGES, ids=_name)
def test_operator_sessions_run(page, impl, tmp_path):
    """A page's ``sh`` blocks of operator commands run as one bash session (``set -e``: every
    command must succeed), as pid 1's child in a pid namespace, in an empty directory."""
    if shutil.which("bash") is None or shutil.which("unshare") is None:
        require_or_skip("bash or unshare (util-linux) not found")
    backend = "1" if impl.__name__.endswith("_pure") else "0"
    script = "\n".join(
        ["set -e", f'shimpid() {{ {shlex.quote(sys.executable)} -m shimpid "$@"; }}']
        + [code for _, code in blocks(page, "sh")]
    )
    env = {**os.environ, "SHIMPID_PURE_PYTHON": backend}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    bash = [shutil.which("bash"), "-c", script]
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *bash],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{_name(page)}:\n{result.stdout}\n{result.stderr}"
    assert "stopped" in result.stdout and "verified" in result.stdout


def test_the_readme_example_is_short_and_the_readme_a_front_page():
    readme = ROOT / "README.md"
    if not readme.is_file():
        require_or_skip("no README.md beside the tests")
    (_, example), *_ = blocks(readme, "python")
    assert len(example.splitlines()) <= 25
    assert len(readme.read_bytes()) <= 12 * 1024


def _readme_figures(results: dict) -> list[str]:
    """The README's headline figures, as the README writes them, from the benchmark's file."""
    ratio = results["alternated"]
    target = {t["description"]: t["measured"] for t in results["targets"]}

    def x(value: float) -> str:
        return f"{value:.2f}x"

    spawn = "shimpid.spawn, new file per child / Popen [{}, {} GiB]"
    floor = "Popen + floor.c's record, new file per child / Popen [{}, {} GiB]"
    return [
        f"tmpfs {x(ratio[spawn.format('tmpfs', 0)])} and {x(ratio[spawn.format('tmpfs', 1)])}",
        f"ext4 {x(ratio[spawn.format('disk', 0)])} and {x(ratio[spawn.format('disk', 1)])}",
        f"tmpfs {x(ratio[floor.format('tmpfs', 0)])} and {x(ratio[floor.format('tmpfs', 1)])}",
        f"ext4 {x(ratio[floor.format('disk', 0)])} and {x(ratio[floor.format('disk', 1)])}",
        x(ratio["Popen(preexec_fn=write_current) / Popen [1 GiB]"]),
        x(target["process_identity(), pidfs: Cython <= 1.30x floor"]),
        f"{ratio['decode() two-line: pure / cython']:.0f}x faster",
        f"`tox -e bench`, {results['run']['date']}",
        f"{results['run']['cpus']}-CPU",
        "Linux {}.{}".format(*results["run"]["kernel"].split(".")[:2]),
        "CPython {}.{}".format(*results["run"]["python"].split(".")[:2]),
    ]


def test_the_readme_figures_are_the_benchmarks():
    """The README's numbers are typed (an index page shows no generated table): they must be
    the committed run's, so a new run that changes them fails here until the README follows."""
    import json

    readme, results = ROOT / "README.md", ROOT / "bench" / "results.json"
    if not (readme.is_file() and results.is_file()):
        require_or_skip("no README.md and bench/results.json beside the tests")
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("## Numbers") : text.index("## Documentation")]
    figures = _readme_figures(json.loads(results.read_text(encoding="utf-8")))
    missing = [figure for figure in figures if figure not in section]
    assert not missing, f"README's Numbers should say {figures}; missing: {missing}"


def test_the_readme_links_name_files_that_exist():
    """The README's links are relative to the repository (it has no public home yet)."""
    readme = ROOT / "README.md"
    if not readme.is_file():
        require_or_skip("no README.md beside the tests")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
    assert targets
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing
