"""The operators' files, generated from the command line's parser by docs/generate_cli_files.py:
the completion scripts that `shimpid completion bash|zsh` prints (run in real shells) and the
man page (rendered by groff). The installed package's scripts are tested; the man page and the
generator live in the checkout (or the sdist), found from this file, and skip where absent."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from _helpers import require_or_skip
from shimpid import _cli

ROOT = Path(__file__).resolve().parent.parent
MAN_PAGE = ROOT / "docs" / "shimpid.1"
GENERATOR = ROOT / "docs" / "generate_cli_files.py"
SHIPPED = {"bash": "shimpid.bash", "zsh": "_shimpid"}


def shimpid(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m shimpid ARGS`` in a new interpreter that imports what this one does."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "shimpid", *args], capture_output=True, text=True, env=env
    )


def commands() -> dict[str, argparse.ArgumentParser]:
    """The parser's commands, by name."""
    parser = _cli._parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(command: argparse.ArgumentParser) -> set[str]:
    return {o for action in command._actions for o in action.option_strings} - {"-h", "--help"}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_the_shipped_script(shell):
    shipped = (files("shimpid") / "completion" / SHIPPED[shell]).read_text(encoding="utf-8")
    done = shimpid("completion", shell)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == shipped
    assert "docs/generate_cli_files.py" in shipped.splitlines()[1 if shell == "zsh" else 0]


def test_completion_wants_a_known_shell():
    done = shimpid("completion", "fish")
    assert done.returncode == 2
    assert "invalid choice: 'fish'" in done.stderr


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory) -> Path:
    bash = shutil.which("bash")
    if bash is None:
        require_or_skip("bash not found")
    path = tmp_path_factory.mktemp("bash") / "shimpid.bash"
    path.write_text(shimpid("completion", "bash").stdout, encoding="utf-8")
    return path


def complete_bash(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being completed): the
    script sourced, then the function it registered for shimpid (complete -F) called as
    bash's programmable completion calls it."""
    line = " ".join(shlex.quote(w) if w else "" for w in words)
    program = f"""
        set -u
        source {shlex.quote(str(script))}
        registered=$(complete -p shimpid) || exit 90
        [[ $registered =~ -F\\ ([^ ]+) ]] || exit 91
        COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE={shlex.quote(line)}
        COMP_POINT=${{#COMP_LINE}}
        "${{BASH_REMATCH[1]}}" shimpid {shlex.quote(words[-1])} {shlex.quote(words[-2])}
        (( ${{#COMPREPLY[@]}} == 0 )) || printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, LC_ALL="C"),
    )
    assert (done.returncode, done.stderr) == (0, ""), done
    return done.stdout.splitlines()


def test_bash_completes_the_commands(bash_script):
    assert complete_bash(bash_script, "shimpid", "") == list(commands())
    assert complete_bash(bash_script, "shimpid", "st") == ["status", "stop"]
    assert complete_bash(bash_script, "shimpid", "l") == ["lock", "ls"]
    assert complete_bash(bash_script, "shimpid", "completion", "") == ["bash", "zsh"]


def test_bash_completes_each_commands_options(bash_script):
    for name, command in commands().items():
        offered = complete_bash(bash_script, "shimpid", name, "--")
        assert set(offered) == {o for o in options(command) | {"--help"} if o[1] == "-"}, name
    assert complete_bash(bash_script, "shimpid", "stop", "--s") == ["--signal"]
    assert complete_bash(bash_script, "shimpid", "stop", "--signal", "HUP", "--t") == ["--timeout"]
    assert complete_bash(bash_script, "shimpid", "-") == ["-h", "--help", "-V", "--version"]


def test_bash_completes_files_and_directories(bash_script, tmp_path):
    (tmp_path / "shim.pid").write_text("")
    (tmp_path / "shimdir").mkdir()
    offered = complete_bash(bash_script, "shimpid", "stop", "shi", cwd=tmp_path)
    assert sorted(offered) == ["shim.pid", "shimdir"]  # compgen -f: in the directory's order
    assert complete_bash(bash_script, "shimpid", "spawn", "--pidfile", "shim.", cwd=tmp_path) == [
        "shim.pid"
    ]
    assert complete_bash(bash_script, "shimpid", "ls", "shi", cwd=tmp_path) == ["shimdir"]


def test_zsh_loads_the_script_under_compinit(tmp_path):
    zsh = shutil.which("zsh")
    if zsh is None:
        require_or_skip("zsh not found: its completion script is not tested")
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_shimpid").write_text(shimpid("completion", "zsh").stdout, encoding="utf-8")
    # As a user installs it: a directory of $fpath, then compinit, which reads its #compdef
    # line; autoload +X then loads (parses) the function without calling it.
    program = f"""
        fpath=({shlex.quote(str(functions))} $fpath)
        autoload -Uz compinit && compinit -u -d {shlex.quote(str(tmp_path / "zcompdump"))}
        print -r -- "shimpid: $_comps[shimpid]"
        autoload +X _shimpid && print -r -- "defined: ${{+functions[_shimpid]}}"
        print -r -- "body: ${{#functions[_shimpid]}}"
    """
    done = subprocess.run(
        [zsh, "-f", "-c", program],
        capture_output=True,
        text=True,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert (done.returncode, done.stderr) == (0, ""), done
    lines = done.stdout.splitlines()
    assert lines[:2] == ["shimpid: _shimpid", "defined: 1"]
    assert int(lines[2].removeprefix("body: ")) > 1000  # the script, not an autoload stub


def man_page_text() -> str:
    if not MAN_PAGE.is_file():
        pytest.skip(f"{MAN_PAGE} is not here (the tests run without the checkout's docs/)")
    return MAN_PAGE.read_text(encoding="utf-8")


def test_the_man_page_renders_without_warnings():
    man_page_text()
    groff = shutil.which("groff")
    if groff is None:
        require_or_skip("groff not found: the man page is not rendered")
    done = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MAN_PAGE)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_man_page_names_every_command_and_option():
    source = man_page_text()
    # the words as the page shows them: fonts dropped, \- as -
    text = re.sub(r"\\f[BIRP]|\\[,/]", "", source).replace("\\-", "-")
    assert text.startswith('.TH SHIMPID "1" "" ')  # no date: the check stays stable
    for name, command in commands().items():
        assert f"\n.SS shimpid {name}\n" in text, name
        assert f"usage: shimpid {name} " in text, name
        for option in options(command):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (name, option)


def test_the_generated_files_are_current():
    """docs/generate_cli_files.py --check, where its tools are (the docs env runs it there
    itself): shtab and argparse-manpage are never test dependencies, so a plain skip."""
    if not GENERATOR.is_file():
        pytest.skip(f"{GENERATOR} is not here")
    missing = [m for m in ("shtab", "argparse_manpage") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed: tox -e docs runs the check (Python 3.11, "
            "shtab==1.13.0, argparse-manpage==4.8)"
        )
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
