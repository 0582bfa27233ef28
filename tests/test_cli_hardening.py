"""The command line, tried as a hostile user and an unlucky operator would: planted pid files,
pid 1 and ancestors, a restart racing a stop, odd paths, huge timeouts, exit codes."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import threading
import time

import pytest

import shimpid
from _helpers import require_pidfd_level, run_in_child, run_in_pid_namespace, script_prelude
from shimpid import Verified, _cli, _operate, _rundir

NOBODY = pwd.getpwnam("nobody").pw_uid

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to be somebody else)")


@pytest.fixture(scope="session")
def impl():
    """The command line is one implementation over the backend's primitives (tested on both
    backends in their own files): its tests run once, on the backend this run has (the
    extension, or the pure backend in the pure legs)."""
    import shimpid._pure  # what the fixtures compare the backend with

    return shimpid._backend._impl


# ---- 8. stop trusts only files nobody else could have written ------------------------------------

PLANTED = """
import pwd, stat
from shimpid import _cli
nobody = pwd.getpwnam("nobody").pw_uid
here = {directory!r}
os.chmod(here, 0o1777)  # like /tmp: anyone may create files here
cli = [sys.executable, "-m", "shimpid", "stop", "--timeout", "5"]
env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), SHIMPID_PURE_PYTHON={pure!r})
out = {{}}

def stop(name, *options):
    result = subprocess.run([*cli, *options, os.path.join(here, name)], env=env,
                            capture_output=True, text=True)
    return [result.returncode, result.stderr.strip()]

def as_nobody(fn):
    child = os.fork()
    if child == 0:
        os.setgid(nobody)
        os.setuid(nobody)
        fn()
        os._exit(0)
    os.waitpid(child, 0)

victim = subprocess.Popen(["sleep", "60"])  # root's
writer = impl.PidFileWriter.at(os.path.join(here, "planted.pid"))
as_nobody(lambda: writer.write_for(victim.pid))  # the right record, by the wrong user
out["planted"] = stop("planted.pid") + [victim.poll() is None]
out["insecure"] = stop("planted.pid", "--insecure") + [victim.poll() is None]
victim.wait()

os.mkdir(os.path.join(here, "private"), 0o700)
victim = subprocess.Popen(["sleep", "60"])
impl.PidFileWriter.at(os.path.join(here, "private", "open.pid"), mode=0o664).write_for(victim.pid)
os.chmod(os.path.join(here, "private", "open.pid"), 0o664)  # group-writable
out["group-writable"] = stop("private/open.pid") + [victim.poll() is None]
os.mkdir(os.path.join(here, "theirs"), 0o755)
impl.PidFileWriter.at(os.path.join(here, "theirs", "x.pid")).write_for(victim.pid)
os.chown(os.path.join(here, "theirs"), nobody, -1)  # its owner may replace what is in it
out["their directory"] = stop("theirs/x.pid") + [victim.poll() is None]

with open(os.path.join(here, "private", "init.pid"), "w") as f:
    f.write("1\\n")  # root's own file, naming pid 1 with no start time
out["pid 1"] = stop("private/init.pid", "--allow-legacy") + [True]

# an ancestor of the stop command: the shell that runs it
shell = subprocess.Popen(["sh", "-c", f"read go; {{' '.join(cli)}} {{here}}/private/shell.pid; "
                          "echo $?"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=env)
impl.PidFileWriter.at(os.path.join(here, "private", "shell.pid")).write_for(shell.pid)
out["ancestor"], _ = shell.communicate("go\\n")
out["ancestor"] = [int(out["ancestor"].strip()), shell.returncode]
victim.kill()
victim.wait()
print(json.dumps(out))
"""


@needs_root
def test_stop_refuses_what_it_must_not_trust_or_signal(impl, shared_dir):
    script = script_prelude(impl) + PLANTED.format(
        directory=shared_dir, pure="1" if impl is shimpid._pure else "0"
    )
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    code, message, alive = out["planted"]
    assert (code, alive) == (4, True) and f"owned by uid {NOBODY}" in message
    assert "--insecure" in message
    code, _, alive = out["insecure"]
    assert (code, alive) == (0, False), "--insecure acts on it"
    code, message, alive = out["group-writable"]
    assert (code, alive) == (4, True) and "writable by group or others" in message
    code, message, alive = out["their directory"]
    assert (code, alive) == (4, True)
    assert f"not trusting {shared_dir}/theirs: a directory owned by uid {NOBODY}" in message
    code, message, _ = out["pid 1"]
    assert code == 4 and "refusing to signal 1: pid 1 is init" in message
    assert out["ancestor"] == [4, 0], "the shell running stop was not signalled"


# ---- 9. stop removes only the record it stopped --------------------------------------------------


def test_stop_keeps_a_record_written_while_it_stopped(impl, pid_path, monkeypatch, capsys):
    """A restart writes a new record between stop's reading the file and removing it (here with
    a delay injected before the removal): the new record stays."""
    monkeypatch.setattr(_cli, "_backend", impl)
    monkeypatch.setattr(_rundir, "_backend", impl)
    monkeypatch.setattr(_operate, "_backend", impl)
    old, new = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    writer = impl.PidFileWriter.at(pid_path)
    writer.write_for(old.pid)
    real_rename = os.rename
    restarted = threading.Event()

    def rename(src, dst, *args, **kwargs):
        if os.fsencode(src) == os.fsencode(pid_path.name):  # moved aside, in its directory
            writer.write_for(new.pid)  # the restarted service, during the delay
            restarted.set()
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    # the move aside through os.rename (a look, then rename(): where there is no renameat2)
    monkeypatch.setattr(_rundir, "_rename_noreplace", lambda *args: None)
    try:
        assert _cli.main(["stop", str(pid_path)]) == 0
        assert restarted.is_set() and old.wait(10) < 0
        assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(new.pid)
        assert capsys.readouterr().out == (
            f"stopped {old.pid}; kept {pid_path}: it was written again since it was read\n"
        )
        assert sorted(os.listdir(pid_path.parent)) == [pid_path.name]
    finally:
        for child in (old, new):
            child.kill()
            child.wait()


# ---- 10. exit codes, odd paths, huge timeouts, messages ------------------------------------------


@needs_root
def test_a_pid_file_that_cannot_be_replaced_exits_1(impl, shared_dir, monkeypatch):
    os.chmod(shared_dir, 0o1777)
    pid_file = os.path.join(shared_dir, "x.pid")
    with open(pid_file, "w") as f:
        f.write("root's\n")  # nobody may not replace it in a sticky directory: EPERM
    monkeypatch.setattr(_cli, "_backend", impl)

    def child(out):
        # what the command says on stderr comes back through the pipe
        sys.stderr = open(out, "w", closefd=False)
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        code = _cli.main(["spawn", "--pidfile", pid_file, "--", "sleep", "60"])
        sys.stderr.write(f"exit {code}")
        sys.stderr.flush()

    code, said = run_in_child(child)
    assert code == 0 and said.endswith(b"exit 1"), said
    assert b"cannot write the pid file (the command was killed)" in said
    assert b"Operation not permitted" in said
    with open(pid_file) as f:
        assert f.read() == "root's\n"


def test_a_missing_command_exits_127(cli, tmp_path):
    code, _, err = cli("spawn", "--pidfile", "./x.pid", "--", "./missing", cwd=tmp_path)
    assert (code, err) == (127, "shimpid: spawn: command not found: ./missing\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", ["", ".", "dir/", "/"])
def test_paths_that_name_no_file(cli, path, tmp_path):
    for command, expected in [("status", 4), ("show", 4), ("stop", 2)]:
        code, out, err = cli(command, path, cwd=tmp_path)
        assert code == expected, (command, out, err)
        assert "Traceback" not in err and "does not name a file" in out + err


def test_huge_timeouts_work(cli, impl, pid_path, sleeper):
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)
    started = time.monotonic()
    code, out, err = cli("stop", "--timeout", "3000000", pid_path)
    assert (code, out) == (0, f"stopped {sleeper.pid}, removed {pid_path}\n"), err
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("timeout", [2.2e6, 1e300, None])
def test_a_handle_waits_any_time(impl, pid_path, timeout):
    child = subprocess.Popen(["sleep", "0.05"])  # any timeout: its end comes first
    impl.PidFileWriter.at(pid_path).write_for(child.pid)
    with shimpid.PidFileReader.at(pid_path).open_process() as handle:
        assert handle.wait(timeout) is None
    child.wait()


def test_stop_and_show_say_why_a_record_is_absent(cli, impl, pid_path, zombie):
    impl.PidFileWriter.at(pid_path).write_for(zombie.pid)
    code, out, _ = cli("show", pid_path)
    assert code == 1
    assert f"why:              process {zombie.pid} has exited (a zombie, not yet reaped)\n" in out
    assert json.loads(cli("show", "--json", pid_path)[1])["why"].startswith(
        f"process {zombie.pid} has exited"
    )
    zombie.wait()
    code, out, _ = cli("stop", pid_path)
    assert (code, out) == (
        0,
        f"not running: process {zombie.pid} has exited; removed stale {pid_path}\n",
    )


def test_clean_from_the_command_line(cli, impl, tmp_path, reaped_pid, sleeper):
    impl.PidFileWriter.at(tmp_path / "dead.pid").write(impl.PidRecord(reaped_pid, 1))
    impl.PidFileWriter.at(tmp_path / "live.pid").write_for(sleeper.pid)
    (tmp_path / f".dead.pid.{reaped_pid}.0.tmp").write_bytes(b"")
    os.utime(tmp_path / f".dead.pid.{reaped_pid}.0.tmp", (time.time() - 10,) * 2)
    code, out, _ = cli("clean", "--dry-run", tmp_path)
    assert code == 0 and out.splitlines() == [
        f"would remove {tmp_path}/.dead.pid.{reaped_pid}.0.tmp: temporary file of writer "
        f"{reaped_pid}, which is not running",
        f"would remove {tmp_path}/dead.pid: pid file: process {reaped_pid} has exited",
    ]
    assert cli("clean", tmp_path)[1].startswith("removed ")
    assert sorted(os.listdir(tmp_path)) == ["live.pid"]
    assert cli("clean", tmp_path / "missing")[0] == 1


# ---- found by review -----------------------------------------------------------------------------


def test_stop_checks_every_directory_on_the_way(cli, impl, tmp_path, sleeper):
    """A writable grandparent lets anyone swap in another service's directory."""
    swappable = tmp_path / "run"
    (swappable / "svc").mkdir(parents=True)
    os.chmod(swappable, 0o777)  # writable by all, not sticky
    path = swappable / "svc" / "app.pid"
    impl.PidFileWriter.at(path).write_for(sleeper.pid)
    code, _, err = cli("stop", path)
    assert code == 4 and f"{swappable}/svc: it is in a directory that other users can" in err
    assert sleeper.poll() is None
    link = tmp_path / "link"
    link.symlink_to(swappable / "svc")  # the resolved path is checked as well
    code, _, err = cli("stop", link / "app.pid")
    assert code == 4 and sleeper.poll() is None


# The ancestor, pid 2 in the namespace: records itself (pidfs needs no /proc), then runs stop
# through a shell. With the host's /proc, stop cannot see that its grandparent is the recorded
# process.
ANCESTOR = """
import importlib, os, subprocess, sys
sys.path[:0] = {sys_path!r}
impl = importlib.import_module({module!r})
impl.PidFileWriter.at({path!r}).write_current()
shell = subprocess.run(["sh", "-c", "{python} -m shimpid stop {path}; echo $?"],
                       capture_output=True, text=True)
print(shell.stdout.strip() + " " + shell.stderr.strip(), flush=True)
"""

FOREIGN_STOP = """
env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), SHIMPID_PURE_PYTHON={pure!r})
said = subprocess.run([sys.executable, "-c", {ancestor!r}], capture_output=True, text=True,
                      env=env)
print(json.dumps([said.returncode, said.stdout, said.stderr]))
"""


def test_stop_under_another_namespaces_proc_refuses(impl, shared_dir):
    """With the host's /proc, stop cannot see its own ancestors: it refuses to signal."""
    require_pidfd_level(impl, shimpid._common.PIDFS)  # else the record needs /proc: refused
    path = os.path.join(shared_dir, "a.pid")
    ancestor = ANCESTOR.format(
        sys_path=sys.path, module=impl.__name__, path=path, python=sys.executable
    )
    script = script_prelude(impl) + FOREIGN_STOP.format(
        pure="1" if impl is shimpid._pure else "0", ancestor=ancestor
    )
    result = run_in_pid_namespace(script, mount_proc=False)
    assert result.returncode == 0, result.stderr
    code, out, err = json.loads(result.stdout)
    assert code == 0, err  # the ancestor lived to report
    assert out.startswith("4 ") and "ancestors cannot be told" in out, out


# The identity of a root's sleeper recorded at {path}, asked by nobody at each pidfd level.
AS_NOBODY = """
read, write = os.pipe()
if os.fork() == 0:
    import pwd
    nobody = pwd.getpwnam("nobody").pw_uid
    os.setgid(nobody)
    os.setuid(nobody)
    out = {{}}
    for level in {levels}:
        impl._set_pidfd_level(level)
        try:
            out[level] = repr(shimpid.PidFileReader.at({path!r}).process_identity())
        except OSError as err:
            out[level] = [type(err).__name__, err.errno, "hidden" in str(err)]
    os.write(write, json.dumps(out).encode())
    os._exit(0)
os.close(write)
print(os.read(read, 1000).decode())
sleeper.kill()
"""

HIDDEN = """
subprocess.run(["mount", "-o", "remount,hidepid=invisible", "/proc"], check=True)
sleeper = subprocess.Popen(["sleep", "60"])  # root's, hidden from nobody now
impl.PidFileWriter.at({path!r}, identity_line=False).write_for(sleeper.pid)
"""


@needs_root
def test_a_process_hidden_by_hidepid_is_not_absent(impl, shared_dir):
    path = os.path.join(shared_dir, "hidden.pid")
    os.chmod(shared_dir, 0o755)
    levels = [0, 1] if impl._pidfd_level() >= 1 else [0]  # PyPy has no pidfds
    script = script_prelude(impl) + (HIDDEN + AS_NOBODY).format(path=path, levels=levels)
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    # kill() answers EPERM, /proc shows nothing: the system cannot tell, it is not Absent
    assert out == {str(level): ["PermissionError", 13, True] for level in levels}


UNREADABLE = """
sleeper = subprocess.Popen(["sleep", "60"])  # root's
impl.PidFileWriter.at({path!r}, identity_line=False).write_for(sleeper.pid)
with open({blocker!r}, "wb"):
    pass
os.chmod({blocker!r}, 0)
# (a mount namespace of its own: the bind mount goes with it)
subprocess.run(["mount", "--bind", {blocker!r}, f"/proc/{{sleeper.pid}}/stat"], check=True)
"""


@needs_root
def test_a_process_whose_proc_entry_cannot_be_read_is_not_called_hidden(impl, shared_dir):
    """/proc shows the process, but its stat refuses this user (an LSM, a bind mount): the
    system cannot tell, with the errno of the read, in both backends; not "hidden", which is
    for a /proc that does not show it (hidepid)."""
    path = os.path.join(shared_dir, "shown.pid")
    os.chmod(shared_dir, 0o755)
    levels = [0, 1] if impl._pidfd_level() >= 1 else [0]
    script = script_prelude(impl) + (UNREADABLE + AS_NOBODY).format(
        path=path, blocker=os.path.join(shared_dir, "blocker"), levels=levels
    )
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {str(level): ["PermissionError", 13, False] for level in levels}


@needs_root
def test_stop_that_cannot_remove_the_pid_file_still_succeeds(impl, shared_dir, monkeypatch):
    os.chmod(shared_dir, 0o755)  # root's: nobody may not remove the pid file from it
    path = os.path.join(shared_dir, "app.pid")
    child = subprocess.Popen(["sleep", "60"], user=NOBODY)
    impl.PidFileWriter.at(path).write_for(child.pid)
    monkeypatch.setattr(_cli, "_backend", impl)

    def stop(out):
        sys.stderr = sys.stdout = open(out, "w", closefd=False)
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        print(f"exit {_cli.main(['stop', path])}", flush=True)

    try:
        code, said = run_in_child(stop)
        assert code == 0 and said.endswith(b"exit 0\n"), said
        assert b"cannot remove it: Permission denied" in said
        assert child.wait(10) == -15 and os.path.exists(path)
    finally:
        child.kill()
        child.wait()


@needs_root
def test_clean_reports_what_it_cannot_read(impl, shared_dir, monkeypatch):
    os.chmod(shared_dir, 0o777)
    path = os.path.join(shared_dir, "secret.pid")
    impl.PidFileWriter.at(path, mode=0o600).write(impl.PidRecord(1, 2))
    monkeypatch.setattr(shimpid._rundir, "_backend", impl)

    def look(out):
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        os.write(out, repr(shimpid.clean(shared_dir)).encode())

    code, said = run_in_child(look)
    assert code == 0, said
    said = said.decode()
    assert said.startswith(f"[Removal(path={path!r}, why=") and "kept: cannot tell" in said
    assert "Permission denied" in said and "removed=False" in said and os.path.exists(path)


# ---- standard output that fails after the command has acted --------------------------------------


def _stale_files(directory, count: int, reaped_pid: int) -> None:
    for n in range(count):
        (directory / f"stale-{n:05}.pid").write_bytes(b"%d\n1\n" % reaped_pid)


def test_an_output_whose_reader_goes_ends_nothing_early(cli, tmp_path, reaped_pid):
    """`shimpid clean DIR | head -1`: the reader goes after a line; clean goes on with what it
    does, and exits as it would have, with no traceback (a pipe's reader going is no error)."""
    _stale_files(tmp_path, 2000, reaped_pid)  # more than a pipe holds
    clean = subprocess.Popen(
        [sys.executable, "-m", "shimpid", "clean", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
    )
    assert clean.stdout.readline().startswith(b"removed ")
    clean.stdout.close()
    assert clean.wait(60) == 0
    assert clean.stderr.read() == b""
    clean.stderr.close()
    assert os.listdir(tmp_path) == [], "every stale file removed all the same"


def test_an_output_that_cannot_be_written_is_told_and_the_status_kept(cli, tmp_path, reaped_pid):
    """`shimpid stop F > /dev/full`: the stale file is removed, and the status says what stop
    did (0: nothing runs); that the output was lost is said on stderr. With no standard output
    at all (>&-), the same, silently."""
    _stale_files(tmp_path, 1, reaped_pid)
    path = tmp_path / "stale-00000.pid"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "shimpid", "stop", str(path)],
            stdout=full,
            stderr=subprocess.PIPE,
            env=cli.env,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"shimpid: cannot write the output: No space left on device\n"
    assert not path.exists()
    _stale_files(tmp_path, 3, reaped_pid)
    closed = subprocess.run(
        ["sh", "-c", 'exec "$0" -m shimpid ls "$1" >&-', sys.executable, str(tmp_path)],
        stderr=subprocess.PIPE,
        env=cli.env,
        timeout=60,
    )
    assert closed.returncode == 0 and closed.stderr == b""
    buffered = {k: v for k, v in cli.env.items() if k != "PYTHONUNBUFFERED"}
    for env in (buffered, dict(buffered, PYTHONUNBUFFERED="1")):  # (at exit, or at once)
        for stderr in ("2>&-", "2>/dev/full", "2</dev/null"):  # nowhere to say so either
            path.write_bytes(b"%d\n1\n" % reaped_pid)
            shell = f'exec "$0" -m shimpid stop "$1" >/dev/full {stderr}'
            done = subprocess.run(["sh", "-c", shell, sys.executable, str(path)], env=env)
            assert done.returncode == 0 and not path.exists(), (stderr, env.get("PYTHONUNBUFFERED"))
