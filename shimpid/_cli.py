"""``shimpid`` / ``python -m shimpid``: look at, start and stop recorded processes from a shell.

shimpid status FILE                    state and pid; exit codes as LSB init scripts use them
shimpid show FILE [--json]             the record, the live process, the verdict and why
shimpid spawn --pidfile FILE [--detach] -- CMD [ARGS...]
shimpid stop FILE [--signal TERM] [--timeout SECONDS] [--allow-legacy] [--insecure]
shimpid signal FILE SIG                send a signal to the verified process only
shimpid pid FILE                       print the verified pid, for shell scripts
shimpid ls DIR [--json]                the pid files of a directory and what they name
shimpid clean DIR [--pattern '*.pid'] [--dry-run]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence

from . import __version__, _backend, _common, _pure
from ._common import Absent, Legacy, StorageError, Verified
from ._handle import open_entry
from ._lock import AlreadyLocked, PidFileLock, holder_pid, is_locked
from ._rundir import clean, judge, read_record_file, remove_record, scan, why_absent
from ._spawn import kill_and_reap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._common import Extras, ProcessIdentity
    from ._pure import PidRecord
    from ._rundir import Found

# LSB init-script status codes (`status` and `show`)
RUNNING, DEAD_WITH_PIDFILE, NOT_RUNNING, UNKNOWN = 0, 1, 3, 4
# `stop`: 0 stopped or nothing running, 1 failed or refused, 2 usage, 4 not permitted or cannot
# tell (LSB's "insufficient privilege", and what status calls unknown)
STOPPED, FAILED, USAGE, NOT_PERMITTED = 0, 1, 2, 4
# `spawn`: the shell's codes for a command that cannot be run
NOT_EXECUTABLE, NOT_FOUND = 126, 127


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shimpid",
        description="Pid files that recognise their process: pid + the kernel's start time.",
        epilog=f"backend: {_backend.BACKEND}",
    )
    parser.add_argument(
        "--version", action="version", version=f"shimpid {__version__} ({_backend.BACKEND} backend)"
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status",
        help="print whether the recorded process runs",
        description="Print the state (verified, legacy, absent) and pid. Exit 0 if it runs "
        "(verified or legacy), 1 if not but the pid file exists, 3 if there is no "
        "pid file, 4 if the pid file cannot be read or the system cannot tell.",
    )
    status.add_argument("file", metavar="FILE", help="the pid file")
    status.set_defaults(run=_status)

    show = commands.add_parser(
        "show",
        help="print the record, the live process and the verdict",
        description="Print the decoded record, its boot and pidfs fingerprint, the live "
        "process's start time, the verdict and, when absent, why. Exit codes as for "
        "status.",
    )
    show.add_argument("file", metavar="FILE", help="the pid file")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=_show)

    start = commands.add_parser(
        "spawn",
        help="start a command and record it",
        description="Start CMD and record it in FILE. In the foreground, wait for it (passing on "
        "SIGINT, SIGTERM and SIGHUP), remove the pid file when it exits and exit "
        "with its status. With --detach, start it in a new session with its standard "
        "streams on /dev/null, and return once the record is written. Exit 1 if the "
        "pid file cannot be written (the command is not started, or is killed), "
        "126 if CMD cannot be run, 127 if it is not found.",
        usage="shimpid spawn [-h] --pidfile FILE [--detach] [--capability TOKEN] -- CMD [ARGS...]",
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
    start.set_defaults(run=_spawn)

    locking = commands.add_parser(
        "lock",
        help="run a command holding the pid file's lock: one instance at a time",
        description="Take FILE's lock (shimpid.PidFileLock), record this process in it, then "
        "run CMD in this process's place (exec), holding the lock: it lives exactly "
        "as long as CMD (and whatever CMD passes its descriptor on to), whatever "
        "kills it, and the record names CMD. CMD finds the lock's descriptor in "
        "SHIMPID_LOCK_FD. A stale pid file (its process gone, its pid reused) never "
        "blocks. Exit 1 if another process holds the lock (its pid is printed), or "
        "the file cannot be written; otherwise CMD's own status (126, 127: it cannot "
        "be run, is not found).",
        usage="shimpid lock [-h] [--timeout SECONDS | --wait] [--capability TOKEN] FILE -- CMD "
        "[ARGS...]",
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
        "command",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="the command and its arguments, after --",
    )
    locking.set_defaults(run=_lock)

    stop = commands.add_parser(
        "stop",
        help="stop the recorded process",
        description="Signal the recorded process through a handle that cannot hit a reused pid, "
        "wait, send SIGKILL after the timeout, and remove the pid file once it is "
        "gone (only if it still holds that record). Never signals an unverified "
        "process, pid 1, this command or its ancestors, nor trusts a pid file that "
        "another user could have written (see --insecure). Exit 0 if it stopped or "
        "nothing ran (a stale pid file is removed), 1 if it did not stop or was "
        "refused, 2 for a usage error, 4 if not permitted, not trusted, or the system "
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

    listing = commands.add_parser(
        "ls",
        help="list the pid files of a directory and what they name",
        description="One row per pid file in DIR (not below it), sorted: the path, pid, state "
        "(verified, legacy, absent, unknown), when the process started (wall clock, "
        "from its start time and this boot's), its age and the capability; then a "
        "summary. Exit 0, or 1 if DIR cannot be read.",
    )
    listing.add_argument("directory", metavar="DIR", help="the directory to list")
    listing.add_argument(
        "--pattern",
        default="*.pid",
        metavar="GLOB",
        help="which files are pid files (default: *.pid)",
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object: the rows and the summary"
    )
    listing.set_defaults(run=_ls)

    tidy = commands.add_parser(
        "clean",
        help="remove stale pid files and temporary files of dead writers",
        description="In DIR (not below it), remove the temporary files of writers that are no "
        "longer running, and the pid files that read absent (each only if unchanged "
        "since it was read), printing each. Exit 0, or 1 if some file could not be "
        "judged (it is kept and printed).",
    )
    tidy.add_argument("directory", metavar="DIR", help="the directory to clean")
    tidy.add_argument(
        "--pattern",
        default="*.pid",
        metavar="GLOB",
        help="which files are pid files (default: *.pid)",
    )
    tidy.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    tidy.set_defaults(run=_clean)
    return parser


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
def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _cannot_prepare(command: str, err: Exception) -> int:
    """The message and exit code when ``command``'s writer or lock cannot be made."""
    if not isinstance(err, StorageError):  # TypeError, ValueError: the capability
        _complain(f"{command}: bad capability: {err}")
        return USAGE
    if err.errno is None:  # the path itself: NUL, names no file
        _complain(f"{command}: bad pid file path: {err}")
        return USAGE
    _complain(f"{command}: cannot write the pid file: {err}")  # its directory
    return FAILED


def _complain(message: str) -> None:
    sys.stderr.write(f"shimpid: {message}\n")
    sys.stderr.flush()


# ---- status and show -------------------------------------------------------------------------


def _inspect(path: str) -> dict[str, Any]:
    """Everything status and show report, with the LSB code."""
    report: dict[str, Any] = {"file": path, "backend": _backend.BACKEND}
    try:
        reader = _backend.PidFileReader.at(path)
        record, extras = reader._read_entry()
        verdict = reader.process_identity()
    except OSError as err:  # StorageError, or the system could not tell
        missing = isinstance(err, StorageError) and err.errno == errno.ENOENT
        report.update(
            state="absent" if missing else "unknown",
            error=str(err),
            code=NOT_RUNNING if missing else UNKNOWN,
        )
        return report
    state = {Verified: "verified", Legacy: "legacy", Absent: "absent"}[type(verdict)]
    try:
        live_start_time: int | str | None = _backend.process_start_time(record.pid)
    except OSError as err:
        live_start_time = f"unknown: {err}"
    report.update(
        state=state,
        pid=record.pid,
        start_time=record.start_time,
        live_start_time=live_start_time,
        pidfs_id=extras.pidfs_id,
        capability=extras.capability,
        boot_id=extras.boot_id,
        this_boot_id=_common.CURRENT_BOOT_ID,
        code=RUNNING if state != "absent" else DEAD_WITH_PIDFILE,
    )
    if state == "absent":
        report["why"] = why_absent(record, extras)
    report.update(_lock_state(path))
    return report


def _lock_state(path: str) -> dict[str, Any]:
    """Whether a process holds the pid file locked (a PidFileLock's, flock(1)'s...) and, if
    the file verifiably names it, which: ``locked`` is None where that cannot be seen."""
    try:
        locked: bool | None = is_locked(path)
    except OSError:
        locked = None
    held_by = holder_pid(os.fsencode(path)) if locked else None
    return {"locked": locked, "locked_by": held_by}


def _holder(report: dict[str, Any]) -> str:
    """Who holds the lock, in words, for a report whose file is locked."""
    if report["locked_by"] is not None:
        return f"locked by {report['locked_by']}"
    return "locked by a process the file does not name"


def _status(args: argparse.Namespace) -> int:
    report = _inspect(args.file)
    if "pid" in report:
        held = f" ({_holder(report)})" if report["locked"] else ""
        _say(f"{report['state']} {report['pid']}{held}")
    else:
        _say(report["state"] if report["code"] == NOT_RUNNING else f"unknown: {report['error']}")
    return int(report["code"])


def _show(args: argparse.Namespace) -> int:
    report = _inspect(args.file)
    if args.json:
        _say(json.dumps({k: v for k, v in report.items() if k != "code"}, sort_keys=True))
        return int(report["code"])
    _say(f"file:             {report['file']}")
    if "pid" not in report:
        _say(f"state:            {report['state']} ({report['error']})")
        return int(report["code"])
    boot = report["boot_id"]
    if boot is None:
        boot = "not recorded"
    elif boot == report["this_boot_id"]:
        boot += " (this boot)"
    else:
        boot += f" (another boot: this one is {report['this_boot_id']})"
    _say(f"pid:              {report['pid']}")
    _say(f"start time:       {_or_none(report['start_time'])} (recorded)")
    _say(f"live start time:  {_or_none(report['live_start_time'])}")
    _say(f"pidfs inode:      {_or_none(report['pidfs_id'])} (recorded)")
    _say(f"capability:       {_or_none(report['capability'])}")
    _say(f"boot:             {boot}")
    _say(f"state:            {report['state']}")
    lock = (
        "cannot tell"
        if report["locked"] is None
        else _holder(report)
        if report["locked"]
        else "not held"
    )
    _say(f"lock:             {lock}")
    if "why" in report:
        _say(f"why:              {report['why']}")
    return int(report["code"])


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
    except (TypeError, ValueError, StorageError) as err:
        return _cannot_prepare("spawn", err)
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
        _complain(f"spawn: command not found: {command[0]}")
        return NOT_FOUND
    except PermissionError as err:
        _complain(f"spawn: cannot run {command[0]}: {err.strerror}")
        return NOT_EXECUTABLE
    except OSError as err:
        _complain(f"spawn: cannot run {command[0]}: {err}")
        return FAILED
    try:
        writer.write_for(child.pid)
    except BaseException as err:
        kill_and_reap(child)
        if not isinstance(err, OSError):
            raise
        _complain(f"spawn: cannot write the pid file (the command was killed): {err}")
        return FAILED
    _say(f"started {child.pid}, recorded in {args.pidfile}")
    if args.detach:
        return 0
    written = _our_record(args.pidfile, child.pid)
    forward.to(child)
    code = child.wait()
    if written is not None:
        _remove(args.pidfile, written)  # unless another has been written since
    return 128 - code if code < 0 else code


def _our_record(path: str, pid: int) -> Found | None:
    """The pid file's bytes and inode if it holds the record of pid (not another's, written in
    the instant since), for removing it later only if unchanged."""
    try:
        found = read_record_file(path)
        if found is not None and _backend.PidRecord.decode(found[0]).pid == pid:
            return found
    except OSError:
        pass
    return None


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


# ---- lock ------------------------------------------------------------------------------------


def _lock(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _complain("lock: no command given (put it after --)")
        return USAGE
    try:
        lock = PidFileLock(args.file, capability=args.capability)
    except (TypeError, ValueError, StorageError) as err:
        return _cannot_prepare("lock", err)
    try:
        lock.acquire(timeout=None if args.wait else args.timeout)
    except AlreadyLocked as err:
        holder = err.pid if err.pid is not None else "a process the file does not name"
        _complain(f"lock: {args.file} is locked by {holder}")
        return FAILED
    except OSError as err:
        _complain(f"lock: cannot lock the pid file: {err}")
        return FAILED
    fd = lock._slot[0]
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
            _complain(f"lock: command not found: {command[0]}")
            return NOT_FOUND
        _complain(f"lock: cannot run {command[0]}: {err.strerror}")
        return NOT_EXECUTABLE
    return FAILED  # not reached: execvpe() returns only by raising


# ---- stop ----------------------------------------------------------------------------------


def untrusted(path: str) -> str | None:
    """Why a pid file cannot be trusted to name a process to signal, or None.

    start-stop-daemon's rule for root, applied to everyone: the file must be this user's or
    root's, writable by nobody else, and no directory on its way (as given, or resolved) may let
    another user replace what is in it. Otherwise any user could point this command at any
    process (its correct start time is in /proc).
    """
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_uid not in (0, os.geteuid()):
        return f"it is owned by uid {info.st_uid}, not by this user or root"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by group or others"
    for directory in _directories_of(path):
        if _common.others_can_replace(directory):
            return f"directory {directory} lets other users replace what is in it"
    return None


def _directories_of(path: str) -> list[str]:
    """Every directory from / to the file, along the path as given and as resolved."""
    found: list[str] = []
    for full in (os.path.abspath(path), os.path.realpath(path)):
        directory = os.path.dirname(full)
        while directory not in found:
            found.append(directory)
            directory = os.path.dirname(directory)
    return found


def never_signalled(pid: int) -> str | None:
    """Why pid must never be signalled, whatever a pid file says, or None."""
    if pid == 1:
        return "pid 1 is init"
    if pid == os.getpid():
        return "it is this command"
    if _pure._proc_state() != _pure._PROC_OURS:
        return "this command's ancestors cannot be told: /proc is not this pid namespace's"
    ancestor = os.getppid()
    while ancestor > 1:
        if ancestor == pid:
            return "it is an ancestor of this command"
        ancestor = _parent_of(ancestor)
    return None


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _remove(path: str, found: Found) -> bool:
    """remove_record(), reporting (not raising) what keeps it from removing the file."""
    try:
        return remove_record(path, found)
    except OSError as err:
        _complain(f"could not remove {path}: {err}")
        return False


class _Target:
    """What stop, signal and pid act on: the pid file's bytes, their record and verdict."""

    def __init__(
        self, found: Found, record: PidRecord, extras: Extras, verdict: ProcessIdentity
    ) -> None:
        self.found, self.record, self.extras, self.verdict = found, record, extras, verdict


def _target(args: argparse.Namespace, command: str) -> _Target | int:
    """Read, trust and judge the pid file for ``command``; an exit code where there is nothing
    to act on (said), or the _Target. ``stop`` says "not running" for a missing file (exit 0);
    the others exit 3 (LSB's "not running")."""
    missing = STOPPED if command == "stop" else NOT_RUNNING
    try:
        _backend.PidFileReader.at(args.file)  # the path's checks: a usage error if it names no file
        found = read_record_file(args.file)
    except StorageError as err:
        _complain(f"{command}: {err}")
        return USAGE
    except OSError as err:
        _complain(f"{command}: cannot read {args.file}: {err}")
        return NOT_PERMITTED
    if found is None:
        if not os.path.lexists(args.file):
            if command != "pid":
                _say(f"not running: no pid file {args.file}")
            return missing
        _complain(f"{command}: {args.file} is not a regular file")
        return FAILED
    if not args.insecure:
        problem = untrusted(args.file)
        if problem:
            _complain(f"{command}: not trusting {args.file}: {problem} (--insecure to act anyway)")
            return NOT_PERMITTED
    # The verdict and any removal are of the same bytes: a record written since is never removed.
    try:
        record, extras, verdict = judge(found)
    except OSError as err:
        _complain(f"{command}: cannot tell whether the recorded process runs: {err}")
        return NOT_PERMITTED
    if isinstance(record, StorageError):
        _complain(f"{command}: {args.file}: {record}")
        return FAILED
    if verdict != Absent():
        if verdict == Legacy(record.pid) and not args.allow_legacy:
            _complain(
                f"{command}: refusing {record.pid}: the pid file records no start time, "
                "so its identity cannot be proven (--allow-legacy to act anyway)"
            )
            return NOT_RUNNING if command == "pid" else FAILED  # pid: no verified pid, as absent
        refused = never_signalled(record.pid)
        if refused:
            _complain(f"{command}: refusing to signal {record.pid}: {refused}")
            return NOT_PERMITTED
    return _Target(found, record, extras, verdict)


def _handle_on(target: _Target, args: argparse.Namespace, command: str) -> Any:
    """A ProcessHandle on the target (None: it has exited since), or an exit code (said)."""
    try:
        return open_entry(
            target.record, target.extras, _backend._pin_and_classify, args.allow_legacy
        )
    except OSError as err:
        _complain(
            f"{command}: cannot tell whether {target.record.pid} is the recorded process: {err}"
        )
        return NOT_PERMITTED


def _stop(args: argparse.Namespace) -> int:
    target = _target(args, "stop")
    if isinstance(target, int):
        return target
    if target.verdict == Absent():
        why = why_absent(target.record, target.extras)
        removed = _remove(args.file, target.found)
        _say(f"not running: {why}" + (f"; removed stale {args.file}" if removed else ""))
        return STOPPED
    handle = _handle_on(target, args, "stop")
    if isinstance(handle, int):
        return handle
    if handle is not None:  # None: it exited between the two checks
        with handle:
            try:
                handle.send_signal(args.signal)
                if not handle.wait(args.timeout):
                    _say(f"{handle.pid} still running after {args.timeout:g} s: sending SIGKILL")
                    handle.send_signal(signal.SIGKILL)
                    if not handle.wait(args.timeout):
                        _complain(f"stop: {handle.pid} still running after SIGKILL")
                        return FAILED
            except ProcessLookupError:
                pass  # it exited on its own meanwhile
            except PermissionError as err:
                _complain(f"stop: cannot signal {handle.pid}: {err.strerror}")
                return NOT_PERMITTED
            except OSError as err:
                _complain(
                    f"stop: cannot tell whether {handle.pid} is still the recorded process: {err}"
                )
                return NOT_PERMITTED
    pid = target.record.pid
    removed = _remove(args.file, target.found)
    if removed:
        _say(f"stopped {pid}, removed {args.file}")
    elif _lock_state(args.file)["locked"]:
        # A lock held on: by a process that inherited the lock's descriptor from it.
        _say(f"stopped {pid}; kept {args.file}: still locked by a process it does not name")
    else:
        _say(f"stopped {pid}")
    return STOPPED


def _signal_command(args: argparse.Namespace) -> int:
    target = _target(args, "signal")
    if isinstance(target, int):
        return target
    pid = target.record.pid
    if target.verdict == Absent():
        _say(f"not running: {why_absent(target.record, target.extras)}")
        return NOT_RUNNING
    handle = _handle_on(target, args, "signal")
    if isinstance(handle, int):
        return handle
    if handle is None:
        _say(f"not running: process {pid} has exited")
        return NOT_RUNNING
    with handle:
        try:
            handle.send_signal(args.signal)
        except ProcessLookupError:
            _say(f"not running: process {pid} has exited")
            return NOT_RUNNING
        except PermissionError as err:
            _complain(f"signal: cannot signal {pid}: {err.strerror}")
            return NOT_PERMITTED
        except OSError as err:
            _complain(f"signal: cannot tell whether {pid} is still the recorded process: {err}")
            return NOT_PERMITTED
    _say(f"sent {args.signal.name} to {pid}")
    return 0


def _pid(args: argparse.Namespace) -> int:
    target = _target(args, "pid")
    if isinstance(target, int):
        return target
    if target.verdict == Absent():
        return NOT_RUNNING  # nothing on stdout: $(shimpid pid F) is empty
    _say(str(target.record.pid))
    return 0


# ---- ls --------------------------------------------------------------------------------------


def _ls(args: argparse.Namespace) -> int:
    try:
        found = sorted(scan(args.directory, pattern=args.pattern))
    except OSError as err:
        _complain(f"ls: {err}")
        return FAILED
    rows = [_row(path, verdict) for path, verdict in found]
    counts = {
        state: sum(row["state"] == state for row in rows)
        for state in ("verified", "legacy", "absent", "unknown")
    }
    summary = f"{len(rows)} pid file{'s' * (len(rows) != 1)}: " + ", ".join(
        f"{n} {state}" for state, n in counts.items() if n
    )
    if args.json:
        _say(json.dumps({"files": rows, "summary": counts}, sort_keys=True))
        return 0
    if rows:
        width = max(len(row["path"]) for row in rows)
        _say(
            f"{'PATH':{width}}  {'PID':>7}  {'STATE':8}  {'LOCKED BY':>9}  {'STARTED':19}  "
            f"{'AGE':>12}  CAPABILITY"
        )
        for row in rows:
            held = (
                "-"
                if not row["locked"]
                else "?"
                if row["locked_by"] is None
                else str(row["locked_by"])
            )
            _say(
                f"{row['path']:{width}}  {_or_dash(row['pid']):>7}  {row['state']:8}  "
                f"{held:>9}  {_or_dash(row['started']):19}  {_age(row['age']):>12}  "
                f"{_or_dash(row['capability'])}"
            )
    _say(summary if rows else "no pid files")
    return 0


def _row(path: str, verdict: object) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path,
        "pid": None,
        "state": "unknown",
        "start_time": None,
        "started": None,
        "age": None,
        "capability": None,
    }
    row.update(_lock_state(path))
    if isinstance(verdict, OSError):
        row["error"] = str(verdict)
        return row
    row["state"] = {Verified: "verified", Legacy: "legacy", Absent: "absent"}[type(verdict)]
    try:
        record, extras = _backend.PidFileReader.at(path)._read_entry()
    except OSError:
        return row  # no record (or it went): the verdict says absent
    row.update(pid=record.pid, start_time=record.start_time, capability=extras.capability)
    if record.start_time is not None and not _common.from_another_boot(extras):
        started = _started(record.start_time)
        if started is not None:
            row["started"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            row["age"] = round(time.time() - started, 2)
    return row


def _started(ticks: int) -> float | None:
    """The wall-clock time of a start time of this boot (clock ticks since boot), or None."""
    try:
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    clock = f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{days}d {clock}" if days else clock


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


# ---- clean -----------------------------------------------------------------------------------


def _clean(args: argparse.Namespace) -> int:
    try:
        results = clean(args.directory, pattern=args.pattern, dry_run=args.dry_run)
    except OSError as err:
        _complain(f"clean: {err}")
        return FAILED
    code = 0
    for path, why, removed in results:
        if removed:
            _say(f"{'would remove' if args.dry_run else 'removed'} {path}: {why}")
        else:
            _say(f"kept {path}: {why}")
            code = FAILED
    return code
