"""``shimpid`` / ``python -m shimpid``: look at, start and stop recorded processes from a shell.

shimpid status FILE                    state and pid; exit codes as LSB init scripts use them
shimpid show FILE [--json]             the record, the live process, the verdict and why
shimpid spawn --pidfile FILE [--detach] -- CMD [ARGS...]
shimpid stop FILE [--signal TERM] [--timeout SECONDS] [--allow-legacy] [--insecure]
shimpid signal FILE SIG                send a signal to the verified process only
shimpid pid FILE                       print the verified pid, for shell scripts
shimpid ls DIR [--json]                the pid files of a directory and what they name
shimpid clean DIR [--pattern '*.pid'] [--dry-run]
shimpid completion bash|zsh            print the shell completion script
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import math
import operator
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from . import __version__, _backend, _common
from ._common import ABSENT, Legacy, StorageError, Verified
from ._lock import AlreadyLocked, AlreadyRunning, PidFileLock
from ._operate import Inspection, Refused, inspect, send_signal, stop
from ._rundir import (
    UntrustedPath,
    clean,
    lock_holder,
    open_directory,
    record_of,
    remove_at,
    scan_reads,
    split_file_path,
)
from ._spawn import check_writable, kill_and_reap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# LSB init-script status codes (`status` and `show`)
RUNNING, DEAD_WITH_PIDFILE, NOT_RUNNING, UNKNOWN = 0, 1, 3, 4
# `stop`: 0 stopped or nothing running, 1 failed or refused, 2 usage, 4 not permitted or cannot
# tell (LSB's "insufficient privilege", and what status calls unknown)
STOPPED, FAILED, USAGE, NOT_PERMITTED = 0, 1, 2, 4
# `spawn`: the shell's codes for a command that cannot be run
NOT_EXECUTABLE, NOT_FOUND = 126, 127


def main(argv: Sequence[str] | None = None) -> int:
    # Whatever the locale: a character it cannot encode is escaped, never an error after acting.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse's, with what its errors show escaped: an argument it rejects may be a file name
    a glob found, and hold control characters. Only what is not printable, as ``shown`` does it:
    most of its messages quote their values with repr() already, backslashes escaped."""

    def error(self, message: str) -> NoReturn:
        message = "".join(c if c.isprintable() else _escape(ord(c)) for c in message)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shimpid",
        description="Pid files that recognise their process: pid + the kernel's start time.",
        epilog=f"backend: {_backend.BACKEND}",
    )
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"shimpid {__version__} ({_backend.BACKEND} backend)",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    # one builder a command, in the order --help lists them
    _add_status(commands)
    _add_show(commands)
    _add_spawn(commands)
    _add_lock(commands)
    _add_stop(commands)
    _add_pid_and_signal(commands)
    _add_ls(commands)
    _add_clean(commands)
    _add_completion(commands)
    return parser


def _add_status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="print whether the recorded process runs",
        description="Print the state (verified, legacy, absent) and pid. Exit 0 if it runs "
        "(verified or legacy), 1 if not but the pid file exists (whatever it holds), 3 if "
        "there is no pid file, 4 if the pid file cannot be read, its path is not trusted "
        "(as root), or the system cannot tell.",
    )
    status.add_argument("file", metavar="FILE", help="the pid file")
    _insecure(status)
    status.set_defaults(run=_status)


def _add_show(commands: Any) -> None:
    show = commands.add_parser(
        "show",
        help="print the record, the live process and the verdict",
        description="Print the decoded record, its boot and pidfs fingerprint, the live "
        "process's start time, the verdict and, when absent, why. Exit codes as for "
        "status.",
    )
    show.add_argument("file", metavar="FILE", help="the pid file")
    show.add_argument("--json", action="store_true", help="one JSON object")
    _insecure(show)
    show.set_defaults(run=_show)


def _add_spawn(commands: Any) -> None:
    start = commands.add_parser(
        "spawn",
        help="start a command and record it",
        description="Start CMD and record it in FILE. In the foreground, wait for it (passing on "
        "SIGINT, SIGTERM and SIGHUP), remove the pid file when it exits and exit "
        "with its status. With --detach, start it in a new session with its standard "
        "streams on /dev/null, and return once the record is written. Exit 1 if the "
        "pid file cannot be written (the command is not started, or is killed), 4 if "
        "its path is not trusted (as root; nothing is started), 126 if CMD cannot be run, 127 "
        "if it is not found.",
        usage="shimpid spawn [-h] --pidfile FILE [--detach] [--capability TOKEN] [--insecure] "
        "-- CMD [ARGS...]",
    )
    start.add_argument("--pidfile", required=True, metavar="FILE", help="where to record it")
    start.add_argument(
        "--detach",
        action="store_true",
        help="start it in a new session and return once it is recorded",
    )
    start.add_argument(
        "--capability",
        metavar="TOKEN",
        help="a capability token for line 3 of the pid file, as boxlite writes "
        "its own (services-mux-v1)",
    )
    start.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="the command and its arguments, after --",
    )
    _insecure(start)
    start.set_defaults(run=_spawn)


def _add_lock(commands: Any) -> None:
    locking = commands.add_parser(
        "lock",
        help="run a command holding the pid file's lock: one instance at a time",
        description="Take FILE's lock (shimpid.PidFileLock), record this process in it, then "
        "run CMD in this process's place (exec), holding the lock: it lives exactly "
        "as long as CMD (and whatever CMD passes its descriptor on to), whatever "
        "kills it, and the record names CMD. CMD finds the lock's descriptor in "
        "SHIMPID_LOCK_FD. A stale pid file (its process gone, its pid reused) never "
        "blocks; one nobody holds locked that names a running process (another tool's) is "
        "refused unless --take-over-running. Exit 1 if another process holds the lock or the "
        "file names a running process (its pid is printed), or "
        "the file cannot be written; otherwise CMD's own status (126, 127: it cannot "
        "be run, is not found).",
        usage="shimpid lock [-h] [--timeout SECONDS | --wait] [--capability TOKEN] [--insecure] "
        "[--take-over-running] FILE -- CMD [ARGS...]",
    )
    locking.add_argument("file", metavar="FILE", help="the pid file to lock")
    waiting = locking.add_mutually_exclusive_group()
    waiting.add_argument(
        "--timeout",
        default=0.0,
        type=_seconds,
        metavar="SECONDS",
        help="how long to wait for the lock (default: 0, fail at once)",
    )
    waiting.add_argument(
        "--wait", action="store_true", help="wait for the lock as long as it takes"
    )
    locking.add_argument(
        "--capability", metavar="TOKEN", help="a capability token for line 3, as for spawn"
    )
    locking.add_argument(
        "--take-over-running",
        action="store_true",
        help="take the file over even when nobody holds it locked but it names a running "
        "process (another tool's pid file, say); without it, that is refused (exit 1)",
    )
    locking.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="the command and its arguments, after --",
    )
    _insecure(locking)
    locking.set_defaults(run=_lock)


def _add_stop(commands: Any) -> None:
    stop = commands.add_parser(
        "stop",
        help="stop the recorded process",
        description="Signal the recorded process through a handle that cannot hit a reused pid, "
        "wait, send SIGKILL after the timeout, and remove the pid file once it is "
        "gone (only if it still holds that record). Never signals an unverified "
        "process, pid 1, this command or its ancestors, nor trusts a pid file that "
        "another user could have written (see --insecure). Exit 0 if it stopped or "
        "nothing ran (a stale pid file is removed), 1 if it did not stop or the record "
        "is legacy (see --allow-legacy), 2 for a usage error, 4 if refused (pid 1, "
        "this command or an ancestor), not permitted, not trusted, or the system "
        "cannot tell.",
    )
    stop.add_argument("file", metavar="FILE", help="the pid file")
    stop.add_argument(
        "--signal",
        default="TERM",
        type=_signal,
        metavar="SIG",
        help="the signal to send first: a name (TERM, SIGINT) or a number (default: TERM)",
    )
    stop.add_argument(
        "--timeout",
        default=10.0,
        type=_seconds,
        metavar="SECONDS",
        help="how long to wait before SIGKILL, and after it (default: 10)",
    )
    stop.add_argument(
        "--allow-legacy",
        action="store_true",
        help="also stop a process recorded without a start time (its identity cannot be proven)",
    )
    stop.add_argument(
        "--insecure",
        action="store_true",
        help="act on a pid file that is not owned by this user or root, is "
        "writable by group or others, or lies in a directory others can "
        "write to",
    )
    stop.set_defaults(run=_stop)


def _add_pid_and_signal(commands: Any) -> None:
    for name, run, summary in [
        ("pid", _pid, "print the pid of the recorded process, if it is verified"),
        ("signal", _signal_command, "send a signal to the recorded process, if verified"),
    ]:
        sub = commands.add_parser(
            name,
            help=summary,
            description=(
                "Print the pid of the recorded process, and nothing else, if it is verified: "
                "exit 0; nothing and exit 3 if it is not the recorded process (or there is no "
                "pid file); 4 if the file is not trusted or the system cannot tell. For shell "
                "scripts, instead of $(cat FILE), which also takes line 2 for a pid. Between "
                "this and a kill the process may exit and its pid be reused: `shimpid signal` "
                "cannot hit another process."
                if name == "pid"
                else "Send SIG to the recorded process, through a handle that cannot hit a reused "
                "pid (a pidfd), and return at once (for HUP, USR1 reloads). Exit 0 once sent, 3 if "
                "it is not running or not the recorded process, 1 if refused (legacy), 4 if the "
                "file is not trusted, not permitted, or the system cannot tell. The same rules "
                "as stop for what it trusts and never signals."
            ),
        )
        sub.add_argument("file", metavar="FILE", help="the pid file")
        if name == "signal":
            sub.add_argument(
                "signal", type=_signal, metavar="SIG", help="a name (HUP, SIGUSR1) or a number"
            )
        sub.add_argument(
            "--allow-legacy",
            action="store_true",
            help="also act on a process recorded without a start time",
        )
        sub.add_argument(
            "--insecure",
            action="store_true",
            help="act on a pid file that another user could have written",
        )
        sub.set_defaults(run=run)


def _add_ls(commands: Any) -> None:
    listing = commands.add_parser(
        "ls",
        help="list the pid files of a directory and what they name",
        description="One row per pid file in DIR (not below it), sorted: the path, pid, state "
        "(verified, legacy, absent, unknown), when the process started (wall clock, "
        "from its start time and this boot's), its age and the capability; then a "
        "summary. Exit 0, 1 if DIR cannot be read, 4 if its path is not trusted (as root).",
    )
    listing.add_argument("directory", metavar="DIR", help="the directory to list")
    listing.add_argument(
        "--pattern",
        default="*.pid",
        metavar="GLOB",
        help="which files are pid files: a shell pattern (default: names that end in .pid)",
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object: the rows and the summary"
    )
    _insecure(listing)
    listing.set_defaults(run=_ls)


def _add_clean(commands: Any) -> None:
    tidy = commands.add_parser(
        "clean",
        help="remove stale pid files and temporary files of dead writers",
        description="In DIR (not below it), remove the temporary files of writers that are no "
        "longer running, and the pid files that read absent (each only if unchanged "
        "since it was read, and no process holds it locked), printing each. Exit 0, 1 if "
        "some file could not be judged (it is kept and printed) or DIR cannot be read, 4 if "
        "its path is not trusted (as root).",
    )
    tidy.add_argument("directory", metavar="DIR", help="the directory to clean")
    tidy.add_argument(
        "--pattern",
        default="*.pid",
        metavar="GLOB",
        help="which files are pid files: a shell pattern (default: names that end in .pid)",
    )
    tidy.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    _insecure(tidy)
    tidy.set_defaults(run=_clean)


def _add_completion(commands: Any) -> None:
    completion = commands.add_parser(
        "completion",
        help="print the completion script for bash or zsh",
        description="Print shimpid's completion script for SHELL. Load it from ~/.bashrc with "
        'eval "$(shimpid completion bash)", or save it where the shell looks: as '
        "~/.local/share/bash-completion/completions/shimpid for bash, as _shimpid in a "
        "directory of $fpath (before compinit) for zsh.",
    )
    completion.add_argument("shell", choices=["bash", "zsh"], metavar="SHELL", help="bash or zsh")
    completion.set_defaults(run=_completion)


def _insecure(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--insecure",
        action="store_true",
        help="as root, follow a path that another user could have steered (a directory or "
        "symlink on the way that is not root's, or that others can replace)",
    )


def _signal(text: str) -> signal.Signals:
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        name = text.upper()
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a signal: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


# Each line in one write(): a command shimpid runs shares the stream, and with
# PYTHONUNBUFFERED print() writes the newline apart, so the command's output could land between.
def _say(message: str, end: str = "\n") -> None:
    out = sys.stdout
    if out is None:  # started without one (>&-): what is done is done, said to nobody
        return
    try:
        out.write(message + end)
        out.flush()
    except OSError as err:
        _output_lost(out, err)


def _output_lost(out: Any, err: OSError) -> None:
    """Standard output refused what was said (its reader went, as ``| head`` does: EPIPE; a full
    disk): what was done stands, and the exit status says so. Told on stderr, but for a reader
    that went. What is still to be said, and what it holds unwritten, goes to /dev/null: nothing
    fails as the interpreter flushes it at exit (status 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, out.fileno())
    finally:
        os.close(devnull)
    if err.errno != errno.EPIPE:
        _complain(f"cannot write the output: {err.strerror}")


def _complain(message: str) -> None:
    err = sys.stderr
    if err is None:
        return
    try:
        err.write(f"shimpid: {message}\n")
        err.flush()
    except OSError:
        # Nowhere left to say it: what was done stands, and the status says it. Dropped, not
        # sent to /dev/null: its descriptor may not be ours (started without one, a runtime
        # such as ASan's may hold the number), and the interpreter then flushes it no more.
        sys.stderr = None


def shown(text: object) -> str:
    """Text from a file or a file name, safe to print: control characters, backslashes and
    bytes that are not UTF-8 (surrogate escapes) as backslash escapes, never interpreted by the
    terminal and never an encoding error, whatever the locale."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape(ord(c)) for c in text)


def _escape(code: int) -> str:
    if code == 0x5C:
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def _cannot_prepare(command: str, err: Exception) -> int:
    """The message and exit code when ``command``'s writer or lock cannot be made."""
    if not isinstance(err, StorageError):  # TypeError, ValueError: the capability
        _complain(f"{command}: bad capability: {shown(err)}")
        return USAGE
    if err.errno is None:  # the path itself: NUL, names no file
        _complain(f"{command}: bad pid file path: {shown(err)}")
        return USAGE
    _complain(f"{command}: cannot write the pid file: {shown(err)}")  # its directory
    return FAILED


def _secure(args: argparse.Namespace, signalling: bool) -> bool | None:
    """The trust rules: off with --insecure; else always for the commands that signal, and as
    root (the library's default) for the others."""
    if args.insecure:
        return False
    return True if signalling else None


def _failed(command: str, err: OSError, path: str) -> int:
    """Say why ``command`` could not act on ``path``: exit 1 for a refused legacy record, 4
    (LSB's "insufficient privilege", and status's "unknown") for the rest."""
    if isinstance(err, UntrustedPath):
        _complain(f"{command}: {shown(err.strerror)} (--insecure to act anyway)")
        return NOT_PERMITTED
    if isinstance(err, Refused):
        if err.reason == "legacy":
            _complain(
                f"{command}: refusing {err.pid}: the pid file records no start time, so its "
                "identity cannot be proven (--allow-legacy to act anyway)"
            )
            return NOT_RUNNING if command == "pid" else FAILED  # pid: no verified pid
        _complain(f"{command}: {shown(err.strerror)}")
        return NOT_PERMITTED
    if isinstance(err, PermissionError) and err.filename is None:  # signalling, or /proc
        _complain(f"{command}: not permitted: {err.strerror}")
    elif isinstance(err, StorageError) and err.errno is None:
        _complain(f"{command}: {shown(path)}: {shown(err.strerror)}")  # not a regular file
    elif isinstance(err, StorageError) or err.filename is not None:  # the file
        _complain(f"{command}: cannot read {shown(path)}: [Errno {err.errno}] {err.strerror}")
    else:
        _complain(f"{command}: cannot tell whether the recorded process runs: {shown(err)}")
    return NOT_PERMITTED


def _usable(command: str, path: str) -> bool:
    try:
        split_file_path(path)
    except StorageError as err:
        _complain(f"{command}: {shown(err)}")
        return False
    return True


# ---- status and show -------------------------------------------------------------------------


def _state(verdict: object) -> str:
    return (
        "verified"
        if type(verdict) is Verified
        else "legacy"
        if type(verdict) is Legacy
        else "absent"
    )


def _code(found: Inspection) -> int:
    """LSB status: 0 running, 1 dead but its pid file exists, 3 no pid file."""
    if found.verdict != ABSENT:
        return RUNNING
    return NOT_RUNNING if found.read is None else DEAD_WITH_PIDFILE


def _report(found: Inspection) -> dict[str, Any]:
    """Everything status and show say, from the one read."""
    report: dict[str, Any] = {
        "file": found.path,
        "backend": _backend.BACKEND,
        "state": _state(found.verdict),
        "locked": found.locked,
        "locked_by": found.holder,
    }
    if found.read is None:
        return report
    record, extras = found.record, found.extras
    if isinstance(record, StorageError):
        report.update(pid=None, start_time=None, error=str(record))
    else:
        try:
            live: int | str | None = _backend.process_start_time(record.pid)
        except OSError as err:
            live = f"unknown: {err}"
        report.update(pid=record.pid, start_time=record.start_time, live_start_time=live)
    report.update(
        pidfs_id=extras.pidfs_id,
        capability=extras.capability,
        boot_id=extras.boot_id,
        this_boot_id=_common.CURRENT_BOOT_ID,
    )
    if found.verdict == ABSENT:
        report["why"] = found.why_absent
    return report


def _inspected(command: str, args: argparse.Namespace) -> Inspection | int:
    if not _usable(command, args.file):
        return UNKNOWN  # LSB status has no usage code (its 2 means "dead, lock file exists")
    try:
        return inspect(args.file, secure=_secure(args, False))
    except OSError as err:  # untrusted, unreadable, or the system cannot tell
        return _failed(command, err, args.file)


def _holder(found: Inspection) -> str:
    holder = found.holder
    if holder is None:
        return "locked by a process the file does not name"
    return f"locked by {holder}"


def _status(args: argparse.Namespace) -> int:
    found = _inspected("status", args)
    if isinstance(found, int):
        return found
    if found.read is None:
        _say("absent")
    elif found.pid is None:
        _say(f"absent: {shown(found.why_absent)}")
    else:
        held = f" ({_holder(found)})" if found.locked else ""
        _say(f"{_state(found.verdict)} {found.pid}{held}")
    return _code(found)


def _show(args: argparse.Namespace) -> int:
    found = _inspected("show", args)
    if isinstance(found, int):
        return found
    report = _report(found)
    if args.json:
        _say(json.dumps(report, sort_keys=True))
        return _code(found)
    _say(f"file:             {shown(report['file'])}")
    if found.read is None:
        _say("state:            absent (no pid file)")
        return _code(found)
    boot = report["boot_id"]
    if boot is None:
        boot = "not recorded"
    elif boot == report["this_boot_id"]:
        boot += " (this boot)"
    else:
        boot += f" (another boot: this one is {report['this_boot_id']})"
    if "error" in report:
        _say(f"record:           none ({shown(report['error'])})")
    else:
        _say(f"pid:              {report['pid']}")
        _say(f"start time:       {_or_none(report['start_time'])} (recorded)")
        _say(f"live start time:  {_or_none(report['live_start_time'])}")
    _say(f"pidfs inode:      {_or_none(report['pidfs_id'])} (recorded)")
    _say(f"capability:       {shown(_or_none(report['capability']))}")
    _say(f"boot:             {shown(boot)}")
    _say(f"state:            {report['state']}")
    lock = "cannot tell" if found.locked is None else _holder(found) if found.locked else "not held"
    _say(f"lock:             {lock}")
    if "why" in report:
        _say(f"why:              {shown(report['why'])}")
    return _code(found)


def _or_none(value: object) -> str:
    return "none" if value is None else str(value)


# ---- spawn -----------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _complain("spawn: no command given (put it after --)")
        return USAGE
    try:
        writer = _backend.PidFileWriter.at(args.pidfile, capability=args.capability)
        # The way to the file checked (as root), and its directory kept: the record is read
        # back, and removed, through it, never by looking the path up again.
        where, name = split_file_path(args.pidfile)
        directory = open_directory(where, secure=_secure(args, False))
    except UntrustedPath as err:
        return _failed("spawn", err, args.pidfile)
    except (TypeError, ValueError, StorageError) as err:
        return _cannot_prepare("spawn", err)
    except OSError:
        # One the user may write to but not read (0300): written all the same, as by
        # shimpid.spawn(), but neither read back nor removed when the command exits.
        directory = None
    try:
        return _spawn_in(args, command, writer, directory, name)
    finally:
        if directory is not None:
            os.close(directory)


def _spawn_in(
    args: argparse.Namespace,
    command: list[str],
    writer: _backend.PidFileWriter,
    directory: int | None,
    name: bytes,
) -> int:
    try:
        check_writable(writer)
    except OSError as err:
        _complain(f"spawn: cannot write the pid file (nothing was started): {shown(err)}")
        return FAILED
    options: dict[str, Any] = {}
    if args.detach:
        options.update(
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    else:
        forward = _Forwarder()  # from before the spawn: a signal must not orphan the command
    # As shimpid.spawn(), in two steps: a failure of each has its own exit code.
    try:
        child = subprocess.Popen(command, **options)
    except FileNotFoundError:
        _complain(f"spawn: command not found: {shown(command[0])}")
        return NOT_FOUND
    except PermissionError as err:
        _complain(f"spawn: cannot run {shown(command[0])}: {err.strerror}")
        return NOT_EXECUTABLE
    except OSError as err:
        _complain(f"spawn: cannot run {shown(command[0])}: {shown(err)}")
        return FAILED
    try:
        writer.write_for(child.pid)
    except BaseException as err:
        kill_and_reap(child)
        if not isinstance(err, OSError):
            raise
        _complain(f"spawn: cannot write the pid file (the command was killed): {shown(err)}")
        return FAILED
    _say(f"started {child.pid}, recorded in {shown(args.pidfile)}")
    if args.detach:
        return 0
    written = None
    if directory is not None:  # the read that tells, when the command exits, whether it is ours
        with contextlib.suppress(OSError):
            written = record_of(directory, name, child.pid)
    forward.to(child)
    code = forward.wait()
    if written is not None and directory is not None:
        try:
            remove_at(directory, name, written)  # unless another has been written since
        except OSError as err:
            _complain(f"spawn: could not remove {shown(args.pidfile)}: {shown(err)}")
    return 128 - code if code < 0 else code


class _Forwarder:
    """Passes SIGINT, SIGTERM and SIGHUP on to the child; those that come before it exists wait.

    A signal this command was started with ignored stays ignored, as its launcher meant
    (``nohup`` ignores SIGHUP, ``cmd &`` SIGINT), and the child inherits that.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.child: subprocess.Popen[Any] | None = None
        self.pending: list[int] = []
        for signum in self.SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._received)

    def _received(self, signum: int, frame: object) -> None:
        if self.child is None:
            self.pending.append(signum)
        else:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def to(self, child: subprocess.Popen[Any]) -> None:
        self.child = child
        for signum in self.pending:
            self._received(signum, None)

    def wait(self) -> int:
        """The child's ``wait()``, passing signals on as they come.

        Not ``Popen.wait()``: CPython runs a handler between bytecodes, so a signal that comes
        as ``waitpid()`` is entered, or that another thread takes, would be passed on only once
        the child has exited (a ``shimpid spawn`` deaf to SIGTERM for as long as its command
        runs). This waits in ``select()`` on the descriptor the C-level handler writes to
        (``signal.set_wakeup_fd``), which a signal makes readable whenever it comes: the
        forwarded ones, and SIGCHLD, handled meanwhile, for the child's exit.
        """
        child = self.child
        assert child is not None
        read, write = os.pipe()
        try:
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            try:
                on_child = signal.signal(signal.SIGCHLD, _ignore)
                try:
                    _until_exit(child, read)
                finally:  # (None: a handler set outside Python; put back the default)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL if on_child is None else on_child)
            finally:
                signal.set_wakeup_fd(previous)
        finally:
            os.close(read)
            os.close(write)
        return child.returncode


def _ignore(signum: int, frame: object) -> None:
    pass  # SIGCHLD: the wakeup descriptor is what tells


def _until_exit(child: subprocess.Popen[Any], wakeup: int) -> None:
    """Until child has exited, wait for a signal on the wakeup descriptor. (A loop of its own:
    inside the caller's ``finally``, CPython 3.12 to 3.14 would run a handler at its back edge
    outside that ``finally``; see test_hardening.)"""
    import select

    while child.poll() is None:  # after SIGCHLD's handler is set: no exit goes unseen
        select.select([wakeup], [], [])
        try:
            os.read(wakeup, 4096)  # what is left wakes the next select() at once
        except BlockingIOError:
            pass


# ---- lock ------------------------------------------------------------------------------------


def _lock(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _complain("lock: no command given (put it after --)")
        return USAGE
    try:
        lock = PidFileLock(
            args.file,
            capability=args.capability,
            secure=_secure(args, False),
            take_over_running=args.take_over_running,
        )
    except UntrustedPath as err:
        return _failed("lock", err, args.file)
    except (TypeError, ValueError, StorageError) as err:
        return _cannot_prepare("lock", err)
    try:
        lock.acquire(timeout=None if args.wait else args.timeout)
    except AlreadyRunning as err:
        _complain(
            f"lock: {shown(args.file)} is not locked, but names process {err.pid}, which is "
            f"running ({err.why}); --take-over-running if it is not an instance of this program"
        )
        return FAILED
    except AlreadyLocked as err:
        holder = err.pid if err.pid is not None else "a process the file does not name"
        _complain(f"lock: {shown(args.file)} is locked by {holder}")
        return FAILED
    except OSError as err:
        _complain(f"lock: cannot lock the pid file: {shown(err)}")
        return FAILED
    fd = lock.fileno()
    os.set_inheritable(fd, True)
    env = dict(os.environ, SHIMPID_LOCK_FD=str(fd))
    # What subprocess does for a child: Python ignores SIGPIPE and SIGXFSZ, and an ignored
    # signal stays ignored across exec.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvpe(command[0], command, env)
    except OSError as err:  # not run: give the lock back, and say why as a shell would
        lock.release()
        if isinstance(err, FileNotFoundError):
            _complain(f"lock: command not found: {shown(command[0])}")
            return NOT_FOUND
        _complain(f"lock: cannot run {shown(command[0])}: {err.strerror}")
        return NOT_EXECUTABLE
    return FAILED  # not reached: execvpe() returns only by raising


# ---- pid, signal, stop -----------------------------------------------------------------------


def _pid(args: argparse.Namespace) -> int:
    if not _usable("pid", args.file):
        return USAGE
    try:  # signal 0, through the same handle: whether it runs, by the rules of signal
        found = send_signal(args.file, 0, allow_legacy=args.allow_legacy, secure=not args.insecure)
    except OSError as err:
        return _failed("pid", err, args.file)
    if found.outcome != "sent":
        return NOT_RUNNING  # nothing on stdout: $(shimpid pid F) is empty
    _say(str(found.pid))
    return 0


def _signal_command(args: argparse.Namespace) -> int:
    if not _usable("signal", args.file):
        return USAGE
    try:
        found = send_signal(
            args.file, args.signal, allow_legacy=args.allow_legacy, secure=not args.insecure
        )
    except OSError as err:
        return _failed("signal", err, args.file)
    if found.outcome == "sent":
        _say(f"sent {args.signal.name} to {found.pid}")
        return 0
    _say(f"not running: {_not_running(found)}")
    return NOT_RUNNING


def _not_running(found: Inspection) -> str:
    if found.read is None:
        return f"no pid file {shown(found.path)}"
    if found.verdict == ABSENT:
        return shown(found.why_absent)
    return f"process {found.pid} has exited"


def _stop(args: argparse.Namespace) -> int:
    if not _usable("stop", args.file):
        return USAGE

    def escalating(pid: int) -> None:
        _say(f"{pid} still running after {args.timeout:g} s: sending SIGKILL")

    try:
        found = stop(
            args.file,
            sig=args.signal,
            timeout=args.timeout,
            allow_legacy=args.allow_legacy,
            secure=not args.insecure,
            escalating=escalating,
        )
    except OSError as err:
        return _failed("stop", err, args.file)
    if found.outcome == "still running":
        _complain(f"stop: {found.pid} still running after SIGKILL")
        return FAILED
    path = shown(found.path)
    if found.outcome == "not running":
        gone = (
            f"; removed stale {path}"
            if found.removed
            else f"; kept {path}: {shown(found.kept)}"
            if found.kept
            else ""
        )
        _say(f"not running: {_not_running(found)}{gone}")
        return STOPPED
    if found.removed:
        _say(f"stopped {found.pid}, removed {path}")
    elif found.kept:
        _say(f"stopped {found.pid}; kept {path}: {found.kept}")
    else:
        _say(f"stopped {found.pid}")
    return STOPPED


# ---- ls --------------------------------------------------------------------------------------


_COLUMNS = ("path", "pid", "state", "start_time", "started", "age", "capability", "locked")


def _ls(args: argparse.Namespace) -> int:
    # 100,000 files make 300,000 objects (reads, rows, lines) and no cycle: the collector's
    # passes over them, as they pile up, took a third of the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _listing(args)
    finally:
        if collecting:
            gc.enable()


def _listing(args: argparse.Namespace) -> int:
    try:
        found = sorted(
            scan_reads(args.directory, args.pattern, True, _secure(args, False)),
            key=operator.itemgetter(0),
        )
    except OSError as err:
        if isinstance(err, UntrustedPath):
            return _failed("ls", err, args.directory)
        _complain(f"ls: {shown(err)}")
        return FAILED
    boot = _boot_time()
    now = time.time()
    rows = [_row(item, boot, now) for item in found]
    counts = dict.fromkeys(("verified", "legacy", "absent", "unknown"), 0)
    for row in rows:
        counts[row[2]] += 1
    summary = f"{len(rows)} pid file{'s' * (len(rows) != 1)}: " + ", ".join(
        f"{n} {state}" for state, n in counts.items() if n
    )
    if args.json:
        files = []
        for row in rows:
            entry = dict(zip(_COLUMNS, row, strict=False))
            entry["locked_by"] = row[8]
            if row[9] is not None:
                entry["error"] = row[9]
            files.append(entry)
        _say(json.dumps({"files": files, "summary": counts}, sort_keys=True))
        return 0
    if rows:
        paths = [shown(row[0]) for row in rows]
        width = max(map(len, paths))
        lines = [
            f"{'PATH':{width}}  {'PID':>7}  {'STATE':8}  {'LOCKED BY':>9}  {'STARTED':19}  "
            f"{'AGE':>12}  CAPABILITY"
        ]
        line = f"%-{width}s  %7s  %-8s  %9s  %-19s  %12s  %s"
        append, ages = lines.append, dict[int, str]()
        for path, (_, pid, state, _, started, seconds, capability, locked, holder, _) in zip(
            paths, rows, strict=True
        ):
            age = "-"
            if seconds is not None:  # children a spawner starts in one second share it
                age = ages.get(int(seconds)) or ages.setdefault(int(seconds), _age(seconds))
            append(
                line
                % (
                    path,
                    "-" if pid is None else pid,
                    state,
                    "-" if not locked else "?" if holder is None else holder,
                    started or "-",
                    age,
                    "-" if capability is None else shown(capability),
                )
            )
        _say("\n".join(lines))
    _say(summary if rows else "no pid files")
    return 0


def _row(item: tuple[Any, ...], boot: float | None, now: float) -> tuple[Any, ...]:
    """One row of ls, from the one read (a scan_reads item): path, pid, state, start time,
    started, age, capability, locked, locked by, error."""
    path, verdict, data, lock, record, extras, _ = item
    locked = None if lock is None else lock[0]
    state = _STATES.get(type(verdict))
    if state is None:  # an OSError: the system could not tell
        return (path, None, "unknown", None, None, None, None, locked, None, str(verdict))
    if record is None:  # not decoded by the scan already
        try:
            record = _backend.PidRecord.decode(data or b"")
        except StorageError:  # no record
            return (path, None, state, None, None, None, None, locked, None, None)
    if extras is None:
        assert data is not None
        plain = data.count(b"\n") == 2 and data.endswith(b"\n")  # two lines: nothing to parse
        extras = _common.NO_EXTRAS if plain else _common.parse_extras(data)
    start = record.start_time
    started = age = None
    if start is not None and boot is not None and not _common.from_another_boot(extras):
        when = boot + start / _common.CLOCK_TICKS
        second = int(when)
        started = _DATES.get(second)
        if started is None:  # children a spawner starts in one second share it
            started = _DATES[second] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        age = round(now - when, 2)
    holder = lock_holder(lock, verdict) if locked else None
    return (path, record.pid, state, start, started, age, extras.capability, locked, holder, None)


_STATES = {Verified: "verified", Legacy: "legacy", type(ABSENT): "absent"}
_DATES: dict[int, str] = {}


def _boot_time() -> float | None:
    """The wall-clock time of this boot (start times count clock ticks from it), or None."""
    try:
        with open("/proc/stat") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None


def _age(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock


# ---- clean -----------------------------------------------------------------------------------


def _clean(args: argparse.Namespace) -> int:
    try:
        results = clean(
            args.directory,
            pattern=args.pattern,
            dry_run=args.dry_run,
            secure=_secure(args, False),
        )
    except OSError as err:
        if isinstance(err, UntrustedPath):
            return _failed("clean", err, args.directory)
        _complain(f"clean: {shown(err)}")
        return FAILED
    code = 0
    for result in results:
        why = result.why
        if result.action == "kept":
            code, why = FAILED, why[len("kept: ") :]
        _say(f"{result.action} {shown(result.path)}: {shown(why)}")
    return code


# ---- completion ------------------------------------------------------------------------------


def _completion(args: argparse.Namespace) -> int:
    """The script shipped in shimpid/completion, generated from _parser() by
    docs/generate_cli_files.py (shtab): nothing is generated at run time."""
    from importlib.resources import files

    name = "shimpid.bash" if args.shell == "bash" else "_shimpid"
    _say((files("shimpid") / "completion" / name).read_text(encoding="utf-8"), end="")
    return 0
