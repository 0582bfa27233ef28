"""The operator's command line, run as operators run it: a separate process, real files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import shimpid
from _helpers import proc_state, require_or_skip, run_in_child, stop
from shimpid import _cli, _common

OTHER_BOOT = b"0000abcd-1111-2222-3333-4444444444ef"


@pytest.fixture(scope="session")
def impl():
    """The command line is one implementation over the backend's primitives (tested on both
    backends in their own files): its tests run once, on the backend this run has (the
    extension, or the pure backend in the pure legs)."""
    import shimpid._pure  # what the fixtures compare the backend with

    return shimpid._backend._impl


def alive(pid: int) -> bool:
    try:
        return proc_state(pid) != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ---- status and show -----------------------------------------------------------------------------


def test_status_codes(impl, cli, pid_path, sleeper, reaped_pid):
    writer = impl.PidFileWriter.at(pid_path)
    writer.write_for(sleeper.pid)
    assert cli("status", pid_path)[:2] == (0, f"verified {sleeper.pid}\n")
    writer.write(impl.PidRecord(sleeper.pid))
    assert cli("status", pid_path)[:2] == (0, f"legacy {sleeper.pid}\n")
    writer.write(impl.PidRecord(reaped_pid, 1))
    assert cli("status", pid_path)[:2] == (1, f"absent {reaped_pid}\n")
    pid_path.write_bytes(impl.PidRecord.current().encode() + OTHER_BOOT + b"\n")
    assert cli("status", pid_path)[:2] == (1, f"absent {os.getpid()}\n")
    pid_path.write_bytes(b"garbage\n")  # a pid file without a record: absent, as everywhere
    code, out, _ = cli("status", pid_path)
    assert code == 1 and out.startswith("absent: no record (") and "invalid PID 'garbage'" in out
    pid_path.unlink()
    assert cli("status", pid_path)[:2] == (3, "absent\n")


def test_show(impl, cli, pid_path, sleeper):
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)
    start = impl.process_start_time(sleeper.pid)
    pidfs = shimpid.PidFileReader.at(pid_path).read_pidfs_id()
    assert (pidfs is None) == (impl._pidfd_level() != _common.PIDFS)
    code, out, _ = cli("show", pid_path)
    assert code == 0
    assert f"pid:              {sleeper.pid}\n" in out
    assert f"start time:       {start} (recorded)\n" in out
    assert f"live start time:  {start}\n" in out
    assert "(this boot)" in out and "state:            verified\n" in out
    assert "lock:             not held\n" in out
    code, out, _ = cli("show", "--json", pid_path)
    report = json.loads(out)
    assert code == 0 and report == {
        "backend": cli.backend,
        "file": str(pid_path),
        "pid": sleeper.pid,
        "start_time": start,
        "live_start_time": start,
        "state": "verified",
        "pidfs_id": pidfs,
        "capability": None,
        "boot_id": _common.CURRENT_BOOT_ID,
        "this_boot_id": _common.CURRENT_BOOT_ID,
        "locked": False,
        "locked_by": None,
    }
    pid_path.write_bytes(b"%d\n\n%s\n" % (sleeper.pid, OTHER_BOOT))
    code, out, _ = cli("show", pid_path)
    assert code == 1 and "start time:       none (recorded)" in out
    assert "(another boot: this one is" in out and "state:            absent" in out
    code, out, _ = cli("show", "--json", pid_path.parent / "missing.pid")
    assert code == 3 and json.loads(out)["state"] == "absent"


# ---- spawn ---------------------------------------------------------------------------------------


def test_spawn_detached_then_status_then_stop(impl, cli, pid_path):
    code, out, err = cli("spawn", "--pidfile", pid_path, "--detach", "--", "sleep", "60")
    assert code == 0, err
    pid = int(out.split()[1].rstrip(","))
    try:
        assert out == f"started {pid}, recorded in {pid_path}\n"
        assert shimpid.PidFileReader.at(pid_path).read().pid == pid
        assert os.getsid(pid) == pid, "a new session"
        assert cli("status", pid_path)[:2] == (0, f"verified {pid}\n")
        code, out, _ = cli("stop", pid_path)
        assert (code, out) == (0, f"stopped {pid}, removed {pid_path}\n")
        wait_for(lambda: not alive(pid))
        assert not pid_path.exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_spawn_in_the_foreground_returns_the_exit_status(cli, pid_path):
    code, out, _ = cli("spawn", "--pidfile", pid_path, "--", "sh", "-c", "echo hi; exit 3")
    assert code == 3
    lines = out.splitlines()  # the command's output and shimpid's, in either order
    assert "hi" in lines and len(lines) == 2
    assert next(line for line in lines if line != "hi").endswith(f", recorded in {pid_path}")
    assert not pid_path.exists(), "removed once the command exited"


def test_each_line_is_one_write_even_unbuffered(cli, pid_path, tmp_path):
    """The command shares shimpid's stdout: with PYTHONUNBUFFERED (CI runners set it) a line
    written in two pieces could have the command's output in between."""
    strace = shutil.which("strace")
    if strace is None:
        require_or_skip("strace not found")
    trace = tmp_path / "trace"
    argv = [sys.executable, "-m", "shimpid", "spawn", "--pidfile", str(pid_path), "--", "true"]
    env = dict(cli.env, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [strace, "-o", str(trace), "-e", "trace=write", "-s", "4096", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    writes = [line for line in trace.read_text().splitlines() if line.startswith("write(1,")]
    assert len(writes) == 1 and writes[0].startswith('write(1, "started '), writes
    assert f'recorded in {pid_path}\\n"' in writes[0], writes


def test_spawn_in_the_foreground_passes_signals_on(cli, pid_path):
    shim = subprocess.Popen(
        [sys.executable, "-m", "shimpid", "spawn", "--pidfile", str(pid_path), "--", "sleep", "60"],
        env=cli.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = shim.stdout.readline()
        pid = int(line.split()[1].rstrip(","))
        shim.send_signal(signal.SIGTERM)
        assert shim.wait(30) == 128 + signal.SIGTERM
        wait_for(lambda: not alive(pid))
        assert not pid_path.exists()
    finally:
        stop(shim)


def test_spawn_in_the_foreground_passes_on_a_signal_another_thread_takes():
    """A signal the kernel gives another thread (or one that comes just as the wait begins) is
    passed on at once. Waiting in waitpid(), CPython would run the handler only once the
    command had exited: the signal would never reach it (seen in CI as a foreground spawn that
    outlived SIGTERM)."""
    from shimpid import _cli

    saved = {
        signum: signal.getsignal(signum) for signum in (*_cli._Forwarder.SIGNALS, signal.SIGCHLD)
    }
    child = subprocess.Popen(["sleep", "5"])
    try:
        forward = _cli._Forwarder()
        forward.to(child)

        def take_it():  # this thread takes the signal: the main one is not interrupted
            time.sleep(0.2)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        thread = threading.Thread(target=take_it)
        thread.start()
        started = time.monotonic()
        code = forward.wait()
        thread.join()
        assert code == -signal.SIGTERM and time.monotonic() - started < 4
        assert signal.set_wakeup_fd(-1) == -1  # as it was: none
        assert signal.getsignal(signal.SIGCHLD) == saved[signal.SIGCHLD]
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        child.kill()
        child.wait()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--", "/nonexistent/program"], 127, "command not found: /nonexistent/program"),
        (["--"], 2, "no command given"),
        ([], 2, "no command given"),
    ],
)
def test_spawn_errors(cli, pid_path, args, code, message):
    result = cli("spawn", "--pidfile", pid_path, *args)
    assert result[0] == code and message in result[2]
    assert not pid_path.exists()


def test_spawn_with_an_unwritable_pid_file_starts_nothing(cli, tmp_path):
    marker = tmp_path / "ran"
    for _ in range(5):
        code, _, err = cli(
            "spawn", "--pidfile", tmp_path / "missing" / "x.pid", "--", "touch", marker
        )
        assert code == 1 and "cannot write the pid file" in err
    assert not marker.exists(), "found before the command was started"


def test_spawn_with_a_pid_file_it_cannot_replace_kills_the_command(cli, pid_path):
    """The record fails after the start (a directory at the path): the command is killed."""
    pid_path.mkdir()
    code, _, err = cli("spawn", "--pidfile", pid_path, "--", "sleep", "60")
    assert code == 1 and "cannot write the pid file (the command was killed)" in err
    assert pid_path.is_dir() and os.listdir(pid_path.parent) == [pid_path.name]


def test_spawn_as_root_starts_nothing_where_another_user_could_steer_the_path(cli, tmp_path):
    """As the other commands as root: the way to the pid file is checked before anything
    starts (exit 4, and --insecure to act anyway)."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to give a symlink to another user")
    shared, marker = tmp_path / "shared", tmp_path / "ran"
    (shared / "theirs").mkdir(parents=True)
    shared.chmod(0o1777)
    (shared / "evil").symlink_to(shared / "theirs")
    os.lchown(shared / "evil", 65534, 65534)
    pid_path = shared / "evil" / "x.pid"
    code, _, err = cli("spawn", "--pidfile", pid_path, "--detach", "--", "touch", marker)
    assert code == 4 and "evil: a symlink owned by uid 65534" in err and "--insecure" in err
    assert not marker.exists() and os.listdir(shared / "theirs") == []
    code, _, err = cli("spawn", "--pidfile", pid_path, "--insecure", "--", "touch", marker)
    assert code == 0, err
    assert marker.exists() and os.listdir(shared / "theirs") == []  # removed once it exited


def test_spawn_removes_the_record_in_the_directory_it_checked(cli, tmp_path):
    """The foreground's removal goes through the directory opened before the start: a symlink
    on the way that the command points elsewhere (root's own: trusted) changes nothing."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "run").symlink_to(tmp_path / "a")
    stray = tmp_path / "b" / "x.pid"
    stray.write_bytes(b"1\n")  # what the path names by the time the command exits
    repoint = f"while [ ! -e {tmp_path}/a/x.pid ]; do sleep 0.01; done; ln -sfn b {tmp_path}/run"
    code, _, err = cli("spawn", "--pidfile", tmp_path / "run" / "x.pid", "--", "sh", "-c", repoint)
    assert code == 0, err
    assert os.readlink(tmp_path / "run") == "b"
    assert os.listdir(tmp_path / "a") == [] and stray.read_bytes() == b"1\n"


def test_spawn_writes_in_a_directory_it_may_write_to_but_not_read(impl, shared_dir):
    """A drop box (0300): the record is written, as shimpid.spawn() writes it, though it can be
    neither read back nor removed through the directory."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to act as another user")
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    drop = os.path.join(shared_dir, "drop")
    os.mkdir(drop, 0o300)
    os.chown(drop, nobody, nobody)

    def child(out):
        from shimpid import _cli

        os.setgid(nobody)
        os.setuid(nobody)
        _cli._backend = impl
        os.write(out, b"%d" % _cli.main(["spawn", "--pidfile", f"{drop}/x.pid", "--", "true"]))

    code, said = run_in_child(child)
    assert (code, said) == (0, b"0")
    assert os.listdir(drop) == ["x.pid"]


def test_spawn_starts_nothing_where_it_cannot_write_the_record(impl, shared_dir):
    """A directory the user may not write in: refused before the command starts (it would run
    until its record failed), with the system's reason."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to act as another user")
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    locked, drop = os.path.join(shared_dir, "locked"), os.path.join(shared_dir, "drop")
    os.mkdir(locked, 0o755)
    os.mkdir(drop, 0o700)
    os.chown(drop, nobody, nobody)

    def child(out):
        from shimpid import _cli

        os.setgid(nobody)
        os.setuid(nobody)
        _cli._backend = impl
        argv = ["spawn", "--pidfile", f"{locked}/x.pid", "--", "touch", f"{drop}/ran"]
        with contextlib.redirect_stderr(io.StringIO()) as said:
            code = _cli.main(argv)
        os.write(out, json.dumps([code, said.getvalue()]).encode())

    code, said = run_in_child(child)
    assert code == 0, said
    assert json.loads(said) == [
        _cli.FAILED,
        "shimpid: spawn: cannot write the pid file (nothing was started): "
        f"[Errno 13] Permission denied: '{locked}/x.pid'\n",
    ]
    assert os.listdir(locked) == [] and os.listdir(drop) == []


# ---- stop ----------------------------------------------------------------------------------------


def test_stop_escalates_to_sigkill(impl, cli, pid_path):
    stubborn = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
        stdout=subprocess.PIPE,
    )
    try:
        assert stubborn.stdout.readline() == b"ready\n"  # TERM is ignored from here on
        impl.PidFileWriter.at(pid_path).write_for(stubborn.pid)
        code, out, _ = cli("stop", "--timeout", "0.3", pid_path)
        assert code == 0
        assert "sending SIGKILL" in out and out.endswith(
            f"stopped {stubborn.pid}, removed {pid_path}\n"
        )
        assert stubborn.wait(10) == -signal.SIGKILL
    finally:
        stop(stubborn)


def test_stop_with_another_signal(impl, cli, pid_path):
    # SIGINT's default action, whatever this suite was launched with: `cmd &` ignores SIGINT
    # and SIGQUIT, nohup SIGHUP, and an ignored signal stays ignored across exec().
    child = subprocess.Popen(
        [sys.executable, "-c", DEFAULT_ACTION + "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        # Not before: until DEFAULT_ACTION has run, an inherited SIG_IGN would drop the signal.
        assert child.stdout.readline() == b"ready\n"
        impl.PidFileWriter.at(pid_path).write_for(child.pid)
        assert cli("stop", "--signal", "INT", pid_path)[0] == 0
        assert child.wait(10) == -signal.SIGINT
    finally:
        stop(child)


# For a Python child: restore the default action of the signals launchers often ignore.
DEFAULT_ACTION = (
    "import signal, time\n"
    "for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
)


@pytest.mark.skipif(
    sys.implementation.name != "cpython",
    reason="PyPy reports a signal ignored at start-up as SIG_DFL (see the documentation)",
)
def test_spawn_keeps_ignored_signals_ignored(cli, pid_path, tmp_path):
    """Under nohup, a hangup must not reach the command through shimpid's forwarding."""
    marker = tmp_path / "survived"
    shim = subprocess.Popen(
        [
            "nohup",
            sys.executable,
            "-m",
            "shimpid",
            "spawn",
            "--pidfile",
            str(pid_path),
            "--",
            "sh",
            "-c",
            f"sleep 0.3; touch {marker}",
        ],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        shim.stdout.readline()  # started
        shim.send_signal(signal.SIGHUP)
        assert shim.wait(30) == 0
        assert marker.exists(), "the command was not hung up"
    finally:
        stop(shim)


def test_stop_never_signals_an_unverified_process(impl, cli, pid_path, sleeper):
    own = impl.PidRecord.current()
    # the pid is alive but the start time is another's: a reused pid
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid, 1))
    code, out, _ = cli("stop", pid_path)
    assert code == 0 and out.startswith(
        f"not running: pid {sleeper.pid} now belongs to another process (it was reused)"
    )
    assert not pid_path.exists(), "the stale pid file is removed"
    assert sleeper.poll() is None, "and the stranger lives on"
    # legacy: refused unless asked
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid))
    code, _, err = cli("stop", pid_path)
    assert code == 1 and "--allow-legacy" in err and sleeper.poll() is None
    assert pid_path.exists()
    assert cli("stop", "--allow-legacy", pid_path)[0] == 0
    assert sleeper.wait(10) == -signal.SIGTERM
    assert own.pid == os.getpid()


def test_stop_without_a_pid_file_or_with_garbage(cli, pid_path):
    assert cli("stop", pid_path)[:2] == (0, f"not running: no pid file {pid_path}\n")
    pid_path.write_bytes(b"garbage")  # no record: nothing runs, and the file is stale
    code, out, _ = cli("stop", pid_path)
    assert code == 0 and "invalid PID 'garbage'" in out and not pid_path.exists()
    assert out.endswith(f"; removed stale {pid_path}\n")


# ---- arguments and help --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["status"], "required: FILE"),
        (["spawn", "--", "true"], "required: --pidfile"),
        (["stop", "--signal", "FOO", "x"], "not a signal: 'FOO'"),
        (["stop", "--signal", "999", "x"], "not a signal: '999'"),
        (["stop", "--timeout", "-1", "x"], "not a number of seconds: '-1'"),
        (["stop", "--timeout", "soon", "x"], "not a number of seconds: 'soon'"),
        (["stop", "--timeout", "nan", "x"], "not a number of seconds: 'nan'"),
    ],
)
def test_bad_arguments(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2 and message in err


@pytest.mark.parametrize("command", ["status", "show", "spawn", "stop"])
def test_help(cli, command):
    code, out, _ = cli(command, "--help")
    assert code == 0 and out.startswith(f"usage: shimpid {command}")


def test_console_script(cli):
    script = shutil.which("shimpid", path=os.path.dirname(sys.executable))
    if script is None:
        require_or_skip("the shimpid console script is not installed beside this Python")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, env=cli.env)
    assert result.returncode == 0 and "status" in result.stdout
