"""The benchmark's figures in the documentation, read from the file the benchmark writes.

``bench/conftest.py`` writes ``bench/results.json`` at the end of a full run (a ``--short`` run
writes ``bench/.build/results.json``). This extension reads it (``benchdata_file``, relative to
the directory of ``conf.py``; by default ``../bench/results.json``) and provides, in MyST::

    ```{bench-machine}
    ```

    ```{bench-table} operations
    :match: write()
    :caption: Writing a pid file
    ```

    Cython: {bench-alternated}`write() atomic [disk] / write_exchange [cython]` the floor.

Table kinds: ``operations``, ``targets``, ``spawning``, ``spawn-ratios``, ``scan``, ``ls-clean``,
``storm``, ``import``, ``alternated``. A figure the file does not have (no file, no such section,
a target not measured, a name no row has) is a Sphinx warning, never an empty table: the site
builds with ``-W``, so a figure that went missing fails the build.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole

logger = logging.getLogger(__name__)

SCHEMA = 1
_CACHE: dict[str, tuple[float, int, Any]] = {}  # path -> (mtime, size, data)


class BenchDataError(Exception):
    """The results file is missing, unreadable, or lacks the figure asked for."""


def results_path(app: Sphinx) -> str:
    return os.path.normpath(os.path.join(app.confdir, app.config.benchdata_file))


def load(path: str) -> dict[str, Any]:
    """The results file's data (read again only when the file changed)."""
    try:
        status = os.stat(path)
    except OSError as err:
        raise BenchDataError(f"no benchmark results at {path} ({err.strerror})") from None
    cached = _CACHE.get(path)
    if cached and cached[:2] == (status.st_mtime, status.st_size):
        return cached[2]
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise BenchDataError(f"cannot read the benchmark results {path}: {err}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BenchDataError(f"{path}: not a results file of schema {SCHEMA}")
    _CACHE[path] = (status.st_mtime, status.st_size, data)
    return data


# --- How figures are written (as the README wrote them) ----------------------------------------


def duration(ns: float | None) -> str:
    """47 ns, 1.49 µs, 133.89 µs, 12.50 ms."""
    if ns is None:
        return "–"
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def times(value: float | None, digits: int = 2) -> str:
    """1.05x (``digits`` decimals)."""
    return "–" if value is None else f"{value:.{digits}f}x"


def plain(value: float | None, digits: int = 2) -> str:
    """1.05: a ratio in a column already headed as one."""
    return "–" if value is None else f"{value:.{digits}f}"


def per_second(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}/s"


def operators(text: str) -> str:
    return text.replace("<=", "≤").replace(">=", "≥")


def code_first(name: str) -> str:
    """Mini-markup: the call a name starts with in backticks (``decode() two-line`` ->
    ```decode()` two-line``)."""
    found = re.match(r"([\w.]+(?:\([^)]*\))?)(.*)", name, re.DOTALL)
    return f"`{found[1]}`{found[2]}" if found else name


def places(text: str, run: dict[str, Any]) -> str:
    """``[tmpfs]`` -> ``, tmpfs``; ``[disk]`` -> ``, ext4`` (the disk's file system)."""
    filesystems = run.get("filesystems") or {}

    def place(found: re.Match[str]) -> str:
        named = [filesystems.get(p.strip(), p.strip()) or p.strip() for p in found[1].split(",")]
        return ", " + ", ".join(named)

    return re.sub(r"\s*\[([^\]]+)\]", place, text)


def inline(text: str) -> list[nodes.Node]:
    """Text with `code` spans, as docutils nodes."""
    out: list[nodes.Node] = []
    for n, part in enumerate(text.split("`")):
        if part:
            out.append(nodes.literal(part, part) if n % 2 else nodes.Text(part))
    return out


# --- Tables --------------------------------------------------------------------------------------

Cell = str  # mini-markup: `code` spans and text


def table(
    headers: list[str], rows: list[list[Cell]], numeric: set[int], caption: str | None
) -> nodes.table:
    """A docutils table; columns in ``numeric`` are right-aligned (the class MyST gives them)."""
    node = nodes.table(classes=["bench-table"])
    if caption:
        node += nodes.title(caption, "", *inline(caption))
    group = nodes.tgroup(cols=len(headers))
    node += group
    for n, header in enumerate(headers):
        # widths for the text and LaTeX builders (HTML sizes its columns itself)
        width = max(len(cells[n].replace("`", "")) for cells in [headers, *rows])
        group += nodes.colspec(colwidth=max(width, len(header.replace("`", "")), 1))

    def row_of(cells: list[Cell]) -> nodes.row:
        row = nodes.row()
        for n, cell in enumerate(cells):
            entry = nodes.entry(classes=["text-right"] if n in numeric else ["text-left"])
            entry += nodes.paragraph("", "", *inline(cell))
            row += entry
        return row

    head = nodes.thead()
    head += row_of(headers)
    group += head
    body = nodes.tbody()
    for cells in rows:
        body += row_of(cells)
    group += body
    return node


class Options:
    """What a directive asked for: rows naming ``match`` and not ``exclude``; a caption; and
    the problems found on the way (each a warning)."""

    def __init__(self, match: str | None, exclude: str | None, caption: str | None) -> None:
        self.match, self.exclude, self.caption = match, exclude, caption
        self.problems: list[str] = []

    def rows(self, rows: list[Any], name_of: Callable[[Any], str]) -> list[Any]:
        return [
            row
            for row in rows
            if (not self.match or self.match in name_of(row))
            and not (self.exclude and self.exclude in name_of(row))
        ]

    def verdict(self, target: dict[str, Any]) -> str:
        met = target.get("met")
        if met is None:
            self.problems.append(f"target not measured in this run: {target.get('description')}")
            return "not measured"
        if not met:
            return "missed"
        # at the limit: what the summary shows (two decimals) equals the limit
        shown = round(target["measured"], 2)
        return "met, at the limit" if math.isclose(shown, target["limit"]) else "met"


Built = tuple[nodes.table, list[Any]]  # a table and the rows it shows


def section(data: dict[str, Any], key: str) -> Any:
    value = data.get(key)
    if not value:
        raise BenchDataError(f"the results file has no {key!r} figures")
    return value


def targets_of(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """figure -> the targets about it."""
    found: dict[str, list[dict[str, Any]]] = {}
    for target in data.get("targets") or []:
        found.setdefault(target.get("figure", ""), []).append(target)
    return found


def operations(data: dict[str, Any], o: Options) -> Built:
    run = data.get("run") or {}
    rows = o.rows(section(data, "operations"), lambda row: row["name"])
    return table(
        ["operation", "Cython", "pure", "speedup", "Cython / floor", "pure / floor", "floor"],
        [
            [
                places(code_first(row["name"]), run),
                duration(row.get("cython_ns")),
                duration(row.get("pure_ns")),
                times(row.get("speedup"), 1),
                "" if row.get("cython_to_floor") is None else plain(row["cython_to_floor"]),
                "" if row.get("pure_to_floor") is None else plain(row["pure_to_floor"]),
                "" if row.get("floor_ns") is None else duration(row["floor_ns"]),
            ]
            for row in rows
        ],
        {1, 2, 3, 4, 5, 6},
        o.caption,
    ), rows


def targets(data: dict[str, Any], o: Options) -> Built:
    run = data.get("run") or {}
    rows = o.rows(section(data, "targets"), lambda row: row["description"])
    return table(
        ["target", "measured", ""],
        [
            [
                places(operators(row["description"]), run),
                times(row.get("measured")),
                o.verdict(row),
            ]
            for row in rows
        ],
        {1},
        o.caption,
    ), rows


def spawning(data: dict[str, Any], o: Options) -> Built:
    spawns = section(data, "spawning")
    parents = spawns.get("parents") or []
    rows = o.rows(spawns.get("methods") or [], lambda row: row["method"])
    if not parents:
        raise BenchDataError("the results file has no spawning figures")
    return table(
        ["", *parents],
        [
            [
                code_first(row["method"]),
                *(per_second((row["by_parent"].get(p) or {}).get("per_second")) for p in parents),
            ]
            for row in rows
        ],
        set(range(1, len(parents) + 1)),
        o.caption,
    ), rows


def spawn_ratios(data: dict[str, Any], o: Options) -> Built:
    about = targets_of(data)
    rows = o.rows(section(data, "spawning").get("ratios") or [], lambda r: r["name"])
    cells = []
    for row in rows:
        aims = about.get(f"alternated: {row['name']}", [])
        cells.append(
            [
                places(row["name"], data.get("run") or {}),
                times(row.get("value")),
                ", ".join(f"{operators(t['comparison'])} {t['limit']:.2f}x" for t in aims),
                ", ".join(o.verdict(t) for t in aims),
            ]
        )
    headers = ["ratio (alternated)", "measured", "target", ""]
    return table(headers, cells, {1, 2}, o.caption), rows


def scan(data: dict[str, Any], o: Options) -> Built:
    rows = o.rows(section(data, "scan").get("sizes") or [], lambda r: str(r["files"]))
    return table(
        [
            "files",
            "Cython per file",
            "pure per file",
            "floor per file",
            "Cython / floor",
            "pure / floor",
        ],
        [
            [
                f"{row['files']:,}",
                duration((row.get("cython") or {}).get("ns_per_file")),
                duration((row.get("pure") or {}).get("ns_per_file")),
                duration(row.get("floor_ns_per_file")),
                times((row.get("cython") or {}).get("to_floor")),
                times((row.get("pure") or {}).get("to_floor")),
            ]
            for row in rows
        ],
        {0, 1, 2, 3, 4, 5},
        o.caption,
    ), rows


def ls_clean(data: dict[str, Any], o: Options) -> Built:
    figures = section(data, "scan")
    clean = {row["backend"]: row for row in figures.get("clean") or []}
    rows = o.rows(figures.get("ls") or [], lambda r: r["backend"])
    return table(
        ["backend", "files", "`shimpid ls` / `scan()`", "`clean()`", "`clean()` per file"],
        [
            [
                "Cython" if row["backend"] == "cython" else row["backend"],
                f"{row['files']:,}",
                times(row.get("to_scan")),
                f"{clean[row['backend']]['seconds']:.2f} s" if row["backend"] in clean else "–",
                duration(clean[row["backend"]]["us_per_file"] * 1e3)
                if row["backend"] in clean
                else "–",
            ]
            for row in rows
        ],
        {1, 2, 3, 4},
        o.caption,
    ), rows


def storm(data: dict[str, Any], o: Options) -> Built:
    run = data.get("run") or {}
    filesystems = run.get("filesystems") or {}
    rows = o.rows(section(data, "storm"), lambda r: f"{r['backend']} {r['mode']} {r['place']}")
    return table(
        ["backend", "writes", "on", "reads", "empty", "torn", "wrong", "empty, share"],
        [
            [
                "Cython" if row["backend"] == "cython" else row["backend"],
                row["mode"],
                filesystems.get(row["place"]) or row["place"],
                f"{row['reads']:,}",
                f"{row['empty']:,}",
                f"{row['torn']:,}",
                f"{row['wrong']:,}",
                f"{row['empty_percent']:.0f}%",
            ]
            for row in rows
        ],
        {3, 4, 5, 6, 7},
        o.caption,
    ), rows


def imports(data: dict[str, Any], o: Options) -> Built:
    figures = section(data, "import")
    ms = figures.get("ms") or {}
    if "shimpid" not in ms or "subprocess" not in ms or figures.get("ratio") is None:
        raise BenchDataError("the results file has no import figures")
    return table(
        ["`import shimpid`", "`import subprocess`", "ratio (alternated)"],
        [[f"{ms['shimpid']:.2f} ms", f"{ms['subprocess']:.2f} ms", times(figures["ratio"])]],
        {0, 1, 2},
        o.caption,
    ), [figures]


def alternated(data: dict[str, Any], o: Options) -> Built:
    rows = o.rows(sorted(section(data, "alternated").items()), lambda r: r[0])
    return table(
        ["alternated ratio", "value"],
        [[f"`{name}`", plain(value)] for name, value in rows],
        {1},
        o.caption,
    ), rows


KINDS: dict[str, Callable[[dict[str, Any], Options], Built]] = {
    "operations": operations,
    "targets": targets,
    "spawning": spawning,
    "spawn-ratios": spawn_ratios,
    "scan": scan,
    "ls-clean": ls_clean,
    "storm": storm,
    "import": imports,
    "alternated": alternated,
}


# --- Directives and the role ------------------------------------------------------------------


class BenchDirective(SphinxDirective):
    def results(self) -> dict[str, Any]:
        path = results_path(self.env.app)
        self.env.note_dependency(path)  # a new run rebuilds the pages that show it
        return load(path)

    def warn(self, message: str) -> list[nodes.Node]:
        logger.warning("%s", message, location=self.get_location(), type="benchdata")
        return []


class BenchTable(BenchDirective):
    """```{bench-table} KIND``` with ``:match: TEXT`` (only the rows whose name holds TEXT),
    ``:exclude: TEXT`` (not those), ``:caption: TEXT`` and ``:class: NAMES``."""

    required_arguments = 1
    option_spec = {  # noqa: RUF012 (docutils' interface)
        "match": directives.unchanged_required,
        "exclude": directives.unchanged_required,
        "caption": directives.unchanged_required,
        "class": directives.class_option,
    }

    def run(self) -> list[nodes.Node]:
        kind = self.arguments[0]
        if kind not in KINDS:
            return self.warn(f"bench-table: no kind {kind!r} (kinds: {', '.join(KINDS)})")
        options = Options(
            self.options.get("match"), self.options.get("exclude"), self.options.get("caption")
        )
        try:
            node, rows = KINDS[kind](self.results(), options)
        except BenchDataError as err:
            return self.warn(f"bench-table {kind}: {err}")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            return self.warn(f"bench-table {kind}: malformed results file ({err!r})")
        for problem in options.problems:
            self.warn(f"bench-table {kind}: {problem}")
        if not rows and (options.match or options.exclude):
            return self.warn(
                f"bench-table {kind}: no row left (match {options.match!r}, "
                f"exclude {options.exclude!r})"
            )
        if not rows:
            return self.warn(f"bench-table {kind}: the results file has no rows for it")
        node["classes"] += self.options.get("class", [])
        self.set_source_info(node)
        return [node]


MACHINE = (
    "{Kind}, {date}: {machine}, {cpus} CPUs, {system} {kernel}, {implementation} {python}"
    "{cython_part}; `/dev/shm` {tmpfs} and {disk_article} {disk} disk."
)


class BenchMachine(BenchDirective):
    """```{bench-machine}``` -> "Full run, 2026-11-29: x86_64, 2 CPUs, Linux 6.18, CPython
    3.11.7, Cython 3.3.1; `/dev/shm` tmpfs and an ext4 disk." ``:format:`` replaces the sentence
    (fields: kind, Kind, date, machine, cpus, system, kernel, implementation, python, cython,
    cython_part, shimpid, tmpfs, disk, disk_article, duration_min, summary_line)."""

    option_spec = {  # noqa: RUF012 (docutils' interface)
        "format": directives.unchanged_required,
    }

    def run(self) -> list[nodes.Node]:
        try:
            run = section(self.results(), "run")
            fields = machine_fields(run)
            text = self.options.get("format", MACHINE).format(**fields)
        except BenchDataError as err:
            return self.warn(f"bench-machine: {err}")
        except (KeyError, IndexError, ValueError) as err:
            return self.warn(f"bench-machine: {err!r} (a field the results file lacks?)")
        paragraph = nodes.paragraph("", "", *inline(text), classes=["bench-machine"])
        self.set_source_info(paragraph)
        return [paragraph]


def machine_fields(run: dict[str, Any]) -> dict[str, Any]:
    for key in ("kind", "date", "machine", "cpus", "kernel", "python"):
        if run.get(key) in (None, ""):
            raise BenchDataError(f"the results file's run has no {key!r}")
    implementation = run.get("python_implementation") or "cpython"
    filesystems = run.get("filesystems") or {}
    disk = filesystems.get("disk") or "unknown"
    kind = "full run" if run["kind"] == "full" else "short run (rough figures)"
    return {
        **{key: value for key, value in run.items() if not isinstance(value, dict | list)},
        "kind": kind,
        "Kind": kind[0].upper() + kind[1:],
        "system": run.get("system") or "Linux",
        "implementation": {"cpython": "CPython", "pypy": "PyPy"}.get(
            implementation, implementation
        ),
        "cython": run.get("cython") or "unknown",
        "cython_part": f", Cython {run['cython']}" if run.get("cython") else "",
        "shimpid": run.get("shimpid") or "",
        "tmpfs": filesystems.get("tmpfs") or "unknown",
        "disk": disk,
        "disk_article": "an" if disk[:1].lower() in "aeiou" else "a",
        "duration_min": f"{(run.get('duration_s') or 0) / 60:.0f}",
    }


class BenchAlternated(SphinxRole):
    """{bench-alternated}`NAME`: the alternated ratio NAME (as the summary prints it), "1.05x"."""

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        path = results_path(self.env.app)
        self.env.note_dependency(path)
        try:
            value = load(path).get("alternated", {}).get(self.text)
            if value is None:
                raise BenchDataError(f"no alternated ratio {self.text!r} in the results file")
        except BenchDataError as err:
            logger.warning("bench-alternated: %s", err, location=self.get_location())
            return [nodes.inline(self.rawtext, "–")], []
        return [nodes.inline(self.rawtext, times(value))], []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("benchdata_file", "../bench/results.json", "env", types=[str])
    app.add_directive("bench-table", BenchTable)
    app.add_directive("bench-machine", BenchMachine)
    app.add_role("bench-alternated", BenchAlternated())
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
