"""The benchmark's two pictures, drawn from one run's figures (bench/conftest.py calls this).

- spawn-cost.svg: milliseconds per spawn of /bin/true against the parent's resident memory,
  for plain Popen, shimpid.spawn and Popen(preexec_fn=...): the line that grows is fork()
  copying the parent's page tables, the reason shimpid records children from the parent.
- operations.svg: each operation's time for the Cython backend, the pure one and the C floor.
"""

from __future__ import annotations

import os

# An SVG with text as text (not outlines) stays a few kilobytes.
STYLE = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "shimpid",
}


def draw(directory: str, spawns: dict, operations: dict, floors: dict, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    written = []
    with plt.rc_context(STYLE):
        if spawns:
            written.append(_spawn_cost(plt, directory, spawns, title))
        if operations:
            written.append(_operations(plt, directory, operations, floors, title))
    return written


def _spawn_cost(plt, directory, spawns, title):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for how, style in [
        ("Popen(preexec_fn=write_current)", "o-"),
        ("shimpid.spawn", "s-"),
        ("Popen", "^--"),
    ]:
        points = sorted(
            (int(parent.split()[0]), seconds * 1e3)
            for (kind, parent), seconds in spawns.items()
            if kind == how
        )
        if points:
            ax.plot(*zip(*points, strict=True), style, label=how)
    ax.set_xlabel("parent's resident memory (GiB)")
    ax.set_ylabel("ms per spawn of /bin/true")
    ax.set_yscale("log")
    ax.set_title(f"What a child-side write costs: fork() copies page tables\n{title}", fontsize=9)
    ax.legend(frameon=False)
    path = os.path.join(directory, "spawn-cost.svg")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path


def _operations(plt, directory, operations, floors, title):
    names = [op for op in operations if "cython" in operations[op] and "pure" in operations[op]]
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.2))
    height = 0.27
    for n, (label, values) in enumerate(
        [
            ("Cython", [operations[op]["cython"] for op in names]),
            ("pure Python", [operations[op]["pure"] for op in names]),
            ("C floor", [floors.get(op, 0) for op in names]),
        ]
    ):
        ax.barh(
            [i + (n - 1) * height for i in range(len(names))],
            [v * 1e6 for v in values],
            height=height,
            label=label,
        )
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per call (median; log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, loc="lower right")
    path = os.path.join(directory, "operations.svg")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path
