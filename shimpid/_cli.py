"""``shimpid`` / ``python -m shimpid``: look at, start and stop recorded processes from a shell.

    shimpid status FILE                    state and pid; exit codes as LSB init scripts use them
    shimpid show FILE [--json]             the record, the live process, the verdict
    shimpid spawn --pidfile FILE [--detach] -- CMD [ARGS...]
    shimpid stop FILE [--signal TERM] [--timeout SECONDS] [--allow-legacy]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from . import _common
from ._backend import BACKEND, PidFileReader, PidFileWriter, process_start_time
from ._common import Absent, Legacy, StorageError, Verified, is_answer
from ._spawn import spawn

# LSB init-script status codes (`status` and `show`)
RUNNING, DEAD_WITH_PIDFILE, NOT_RUNNING, UNKNOWN = 0, 1, 3, 4
# `stop`: 0 stopped or nothing running, 1 failed or refused, 2 usage, 4 not permitted or cannot
# tell (LSB's "insufficient privilege", and what status calls unknown)
STOPPED, FAILED, NOT_PERMITTED = 0, 1, 4


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shimpid",
        description="Pid files that recognise their process: pid + the kernel's start time.",
        epilog=f"backend: {BACKEND}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status", help="print whether the recorded process runs",
        description="Print the state (verified, legacy, absent) and pid. Exit 0 if it runs "
                    "(verified or legacy), 1 if not but the pid file exists, 3 if there is no "
                    "pid file, 4 if the pid file cannot be read.")
    status.add_argument("file", metavar="FILE", help="the pid file")
    status.set_defaults(run=_status)

    show = commands.add_parser(
        "show", help="print the record, the live process and the verdict",
        description="Print the decoded record, its boot, the live process's start time and the "
                    "verdict. Exit codes as for status.")
    show.add_argument("file", metavar="FILE", help="the pid file")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=_show)

    start = commands.add_parser(
        "spawn", help="start a command and record it",
        description="Start CMD and record it in FILE. In the foreground, wait for it (passing on "
                    "SIGINT, SIGTERM and SIGHUP), remove the pid file when it exits and exit "
                    "with its status. With --detach, start it in a new session with its standard "
                    "streams on /dev/null, and return once the record is written.",
        usage="shimpid spawn [-h] --pidfile FILE [--detach] -- CMD [ARGS...]")
    start.add_argument("--pidfile", required=True, metavar="FILE", help="where to record it")
    start.add_argument("--detach", action="store_true",
                       help="start it in a new session and return once it is recorded")
    start.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                       help="the command and its arguments, after --")
    start.set_defaults(run=_spawn)

    stop = commands.add_parser(
        "stop", help="stop the recorded process",
        description="Signal the recorded process through a handle that cannot hit a reused pid, "
                    "wait, send SIGKILL after the timeout, and remove the pid file once it is "
                    "gone. Never signals an unverified process. Exit 0 if it stopped or nothing "
                    "ran (a stale pid file is removed), 1 if it did not stop or was refused, 4 "
                    "if not permitted to signal it.")
    stop.add_argument("file", metavar="FILE", help="the pid file")
    stop.add_argument("--signal", default="TERM", type=_signal, metavar="SIG",
                      help="the signal to send first: a name (TERM, SIGINT) or a number "
                           "(default: TERM)")
    stop.add_argument("--timeout", default=10.0, type=_seconds, metavar="SECONDS",
                      help="how long to wait before SIGKILL, and after it (default: 10)")
    stop.add_argument("--allow-legacy", action="store_true",
                      help="also stop a process recorded without a start time (its identity "
                           "cannot be proven)")
    stop.set_defaults(run=_stop)
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
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _say(message: str) -> None:
    print(message, flush=True)


def _complain(message: str) -> None:
    print(f"shimpid: {message}", file=sys.stderr, flush=True)


# ---- status and show -------------------------------------------------------------------------


def _inspect(path: str) -> dict:
    """Everything status and show report, with the LSB code."""
    reader = PidFileReader.at(path)
    report: dict = {"file": path, "backend": BACKEND}
    try:
        record, extras = reader._read_entry()
        verdict = reader.process_identity()
    except OSError as err:  # StorageError, or the system could not tell
        missing = isinstance(err, StorageError) and err.errno == errno.ENOENT
        report.update(state="absent" if missing else "unknown", error=str(err),
                      code=NOT_RUNNING if missing else UNKNOWN)
        return report
    state = {Verified: "verified", Legacy: "legacy", Absent: "absent"}[type(verdict)]
    try:
        live_start_time = process_start_time(record.pid)
    except OSError as err:
        live_start_time = f"unknown: {err}"
    report.update(
        state=state, pid=record.pid, start_time=record.start_time,
        live_start_time=live_start_time, pidfs_id=extras.pidfs_id,
        boot_id=extras.boot_id, this_boot_id=_common.CURRENT_BOOT_ID,
        code=RUNNING if state != "absent" else DEAD_WITH_PIDFILE)
    return report


def _status(args: argparse.Namespace) -> int:
    report = _inspect(args.file)
    if "pid" in report:
        _say(f"{report['state']} {report['pid']}")
    else:
        _say(report["state"] if report["code"] == NOT_RUNNING else f"unknown: {report['error']}")
    return report["code"]


def _show(args: argparse.Namespace) -> int:
    report = _inspect(args.file)
    if args.json:
        _say(json.dumps({k: v for k, v in report.items() if k != "code"}, sort_keys=True))
        return report["code"]
    _say(f"file:             {report['file']}")
    if "pid" not in report:
        _say(f"state:            {report['state']} ({report['error']})")
        return report["code"]
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
    _say(f"boot:             {boot}")
    _say(f"state:            {report['state']}")
    return report["code"]


def _or_none(value: object) -> str:
    return "none" if value is None else str(value)


# ---- spawn -----------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _complain("spawn: no command given (put it after --)")
        return 2
    try:
        writer = PidFileWriter.at(args.pidfile)
    except (StorageError, TypeError) as err:
        _complain(f"spawn: bad pid file path: {err}")
        return 2
    options: dict = {}
    if args.detach:
        options.update(start_new_session=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        forward = _Forwarder()  # from before the spawn: a signal must not orphan the command
    try:
        child = spawn(command, writer, **options)
    except FileNotFoundError as err:
        if err.filename == args.pidfile:
            _complain(f"spawn: cannot write the pid file: {err}")
            return FAILED
        _complain(f"spawn: command not found: {command[0]}")
        return 127
    except PermissionError as err:
        _complain(f"spawn: {err}")
        return 126
    except OSError as err:
        _complain(f"spawn: {err}")
        return FAILED
    if args.detach:
        _say(f"started {child.pid}, recorded in {args.pidfile}")
        return 0
    record = PidFileReader.at(args.pidfile).read()
    forward.to(child)
    _say(f"started {child.pid}, recorded in {args.pidfile}")
    code = child.wait()
    _remove_if_unchanged(args.pidfile, record)
    return 128 - code if code < 0 else code


class _Forwarder:
    """Passes SIGINT, SIGTERM and SIGHUP on to the child; those that come before it exists wait."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.pending: list[int] = []
        for signum in self.SIGNALS:
            signal.signal(signum, self._received)

    def _received(self, signum: int, frame: object) -> None:
        if self.child is None:
            self.pending.append(signum)
        else:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def to(self, child: subprocess.Popen) -> None:
        self.child = child
        for signum in self.pending:
            self._received(signum, None)


def _remove_if_unchanged(path: str, record: object) -> bool:
    """Remove the pid file if it still holds ``record``: another may have been written since."""
    try:
        if PidFileReader.at(path).read() != record:
            return False
        os.unlink(path)
    except OSError:
        return False
    return True


# ---- stop ------------------------------------------------------------------------------------


def _stop(args: argparse.Namespace) -> int:
    reader = PidFileReader.at(args.file)
    try:
        record = reader.read()
    except StorageError as err:
        if err.errno == errno.ENOENT:
            _say(f"not running: no pid file {args.file}")
            return STOPPED
        _complain(f"stop: {err}")
        return FAILED if is_answer(err) else NOT_PERMITTED
    try:
        handle = reader.open_process(allow_legacy=args.allow_legacy)
        verdict = reader.process_identity() if handle is None else None
    except OSError as err:
        _complain(f"stop: cannot tell whether {record.pid} is the recorded process: {err}")
        return NOT_PERMITTED
    if handle is None:
        if verdict == Legacy(record.pid):
            _complain(f"stop: refusing to signal {record.pid}: the pid file records no start time,"
                      " so its identity cannot be proven (use --allow-legacy to stop it anyway)")
            return FAILED
        removed = _remove_if_unchanged(args.file, record)
        _say(f"not running: {record.pid} is not the recorded process"
             + (f"; removed stale {args.file}" if removed else ""))
        return STOPPED
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
    removed = _remove_if_unchanged(args.file, record)
    _say(f"stopped {record.pid}" + (f", removed {args.file}" if removed else ""))
    return STOPPED
