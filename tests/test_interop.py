"""Interoperation with boxlite, both versions: 0.9.6 (the reference: lines 1-2) and its newest
(commit 2714f17: line 3, the capability token ``services-mux-v1``), through their Rust decode
compiled from tests/oracle/; and with the tools operators use on pid files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shimpid
from _helpers import require_or_skip, run_in_child, stop
from shimpid import Verified, _cli, _common, _operate, _rundir

TOKEN = "services-mux-v1"


def boxlite_096(oracle, data: bytes):
    answer = oracle("d", data).split()
    assert answer[0] == "ok", answer
    return int(answer[1]), None if answer[2] == "-" else int(answer[2])


def boxlite_newest(oracle, data: bytes):
    answer = oracle("c", data).split()
    assert answer[0] == "ok", answer
    return int(answer[1]), None if answer[2] == "-" else int(answer[2]), answer[3] == "1"


# ---- what shimpid writes, both boxlites read as the same record ----------------------------------


@pytest.mark.parametrize("capability", [None, TOKEN, "other-token.v2"])
@pytest.mark.parametrize("identity_line", [True, False])
@pytest.mark.parametrize("start_time", [123456, None])
def test_shimpid_files_read_the_same_in_both_boxlites(
    impl, oracle, pid_path, capability, identity_line, start_time
):
    writer = impl.PidFileWriter.at(pid_path, capability=capability, identity_line=identity_line)
    writer.write(impl.PidRecord(4242, start_time))
    data = pid_path.read_bytes()
    assert boxlite_096(oracle, data) == (4242, start_time)
    assert boxlite_newest(oracle, data) == (4242, start_time, capability == TOKEN)
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.read() == impl.PidRecord(4242, start_time)
    assert reader.read_capability() == capability
    if not identity_line:  # byte for byte what boxlite's own writer writes
        expected = b"4242\n" + (b"%d\n" % start_time if start_time else b"")
        if capability:
            expected += (b"" if start_time else b"\n") + capability.encode() + b"\n"
        assert data == expected


def test_records_of_live_processes_read_the_same(impl, oracle, pid_path, sleeper):
    for write in ("write_current", "write_for"):
        writer = impl.PidFileWriter.at(pid_path, capability=TOKEN)
        getattr(writer, write)(*(() if write == "write_current" else (sleeper.pid,)))
        data = pid_path.read_bytes()
        record = shimpid.PidFileReader.at(pid_path).read()
        assert boxlite_096(oracle, data) == (record.pid, record.start_time)
        assert boxlite_newest(oracle, data) == (record.pid, record.start_time, True)


# ---- what the newest boxlite writes, shimpid reads the same --------------------------------------


@pytest.mark.parametrize("control", [True, False])
@pytest.mark.parametrize("with_start", [True, False])
def test_newest_boxlite_files_read_the_same_in_shimpid(
    impl, oracle, pid_path, sleeper, control, with_start
):
    start = impl.process_start_time(sleeper.pid)
    # ShimPidRecord::encode: the record, then (with runtime port control) an empty line 2 if
    # there is no start time, and the token
    data = b"%d\n" % sleeper.pid + (b"%d\n" % start if with_start else b"")
    if control:
        data += (b"" if with_start else b"\n") + TOKEN.encode() + b"\n"
    pid_path.write_bytes(data)
    assert boxlite_newest(oracle, data) == (sleeper.pid, start if with_start else None, control)
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.read_capability() == (TOKEN if control else None)
    assert reader.process_identity() == (
        Verified(sleeper.pid) if with_start else shimpid.Legacy(sleeper.pid)
    )


line3 = st.one_of(
    st.just(TOKEN),
    st.just(""),
    st.just(f" {TOKEN}\t\r"),
    st.just(TOKEN.upper()),
    st.just("\u3000services-mux-v1\u2028"),
    st.just("\x1cservices-mux-v1"),
    st.just(_common.CURRENT_BOOT_ID),
    st.text(max_size=20).filter(lambda t: "\n" not in t),
)


@given(line3, st.sampled_from([b"", b"\n", b"\nshimpid pidfs=5\n", b"\nline 4\nline 5"]))
def test_the_capability_is_boxlites_reading_of_line_3(impl, oracle, tmp_path_factory, third, rest):
    """shimpid reports the token exactly when the newest boxlite sees runtime port control."""
    data = b"5\n6\n" + third.encode() + rest
    path = tmp_path_factory.mktemp("cap") / "shim.pid"
    path.write_bytes(data)
    answer = oracle("c", data)
    if not answer.startswith("ok "):
        return  # not UTF-8, say: no record for either
    assert (shimpid.PidFileReader.at(path).read_capability() == TOKEN) == answer.endswith(" 1")


# ---- a capability is checked when the writer is made ---------------------------------------------


@pytest.mark.parametrize(
    ("capability", "error"),
    [
        ("", ValueError),
        ("x" * 65, ValueError),
        ("caf\u00e9", ValueError),
        ("a\nb", ValueError),
        (" padded", ValueError),
        ("padded ", ValueError),
        ("tab\there", ValueError),
        (_common.CURRENT_BOOT_ID, ValueError),
        (b"bytes", TypeError),
        (15, TypeError),
    ],
)
def test_bad_capabilities_fail_when_the_writer_is_made(impl, pid_path, capability, error):
    with pytest.raises(error):
        impl.PidFileWriter.at(pid_path, capability=capability)
    assert impl.PidFileWriter.at(pid_path, capability="x" * 64).capability == "x" * 64
    assert impl.PidFileWriter.at(pid_path, capability="with inner spaces").capability


def test_spawn_writes_the_capability(pid_path):
    child = shimpid.spawn(["true"], pid_path, capability=TOKEN)
    child.wait()
    assert pid_path.read_bytes().split(b"\n")[2] == TOKEN.encode()
    with pytest.raises(ValueError, match="own capability"):
        shimpid.spawn(["true"], shimpid.PidFileWriter.at(pid_path), capability=TOKEN)


def test_the_command_line_writes_and_shows_the_capability(pid_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "shimpid", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
        )

    result = cli(
        "spawn", "--detach", "--pidfile", pid_path, "--capability", TOKEN, "--", "sleep", "60"
    )
    assert result.returncode == 0, result.stderr
    try:
        assert f"capability:       {TOKEN}\n" in cli("show", pid_path).stdout
    finally:
        assert cli("stop", pid_path).returncode == 0
    bad = cli("spawn", "--pidfile", pid_path, "--capability", "two\nlines", "--", "true")
    assert bad.returncode == 2 and "bad capability" in bad.stderr


# ---- the operators' tools, run for real ----------------------------------------------------------
# Each test is a row of the compatibility table (docs/reference/other-tools.md): what the tool
# reads of a shimpid file, and whether that protects against pid reuse (none of these tools looks
# at line 2).


@pytest.fixture
def recorded(impl, pid_path, sleeper):
    """A shimpid file (four lines) for a live child: what the tools are given."""
    impl.PidFileWriter.at(pid_path, capability=TOKEN).write_for(sleeper.pid)
    assert pid_path.read_bytes().count(b"\n") == 4
    return pid_path, sleeper.pid


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (os.path.exists(name) and name)
        if found:
            return found
    require_or_skip(f"{names[0]} is not installed here")


def test_start_stop_daemon_reads_the_first_line(recorded):
    path, pid = recorded
    ssd = tool("start-stop-daemon", "/sbin/start-stop-daemon")
    status = subprocess.run([ssd, "--status", "--pidfile", str(path)])
    assert status.returncode == 0, "running"
    test = subprocess.run(
        [ssd, "--stop", "--test", "--pidfile", str(path)], capture_output=True, text=True
    )
    assert test.returncode == 0 and str(pid) in test.stdout


def test_pgrep_and_pkill_read_the_first_line(recorded):
    path, pid = recorded
    pgrep = tool("pgrep")
    assert (
        subprocess.run([pgrep, "-F", str(path)], capture_output=True, text=True).stdout
        == f"{pid}\n"
    )
    assert subprocess.run([tool("pkill"), "-0", "-F", str(path)]).returncode == 0
    # -L: only a pid file its owner holds locked (shimpid.PidFileLock's files)
    assert subprocess.run([pgrep, "-L", "-F", str(path)], capture_output=True).returncode != 0


def test_lsb_pidofproc_reads_the_first_line(recorded):
    path, pid = recorded
    functions = "/lib/lsb/init-functions"
    if not os.path.exists(functions):
        require_or_skip("the LSB init functions are not installed (sysvinit-utils)")
    out = subprocess.run(
        ["sh", "-c", f'. {functions}; pidofproc -p "$1" sleep', "sh", str(path)],
        capture_output=True,
        text=True,
    )
    assert (out.returncode, out.stdout) == (0, f"{pid}\n")


def test_python_daemon_reads_the_first_line(recorded):
    path, pid = recorded
    try:
        from daemon.pidfile import TimeoutPIDLockFile
    except ImportError:
        require_or_skip("python-daemon is not installed")
    assert TimeoutPIDLockFile(str(path)).read_pid() == pid


def test_the_pid_package_reads_the_first_line(recorded):
    path, pid = recorded
    try:
        import pid as pid_package
    except ImportError:
        require_or_skip("the pid package is not installed")
    pidfile = pid_package.PidFile(pidname=path.name, piddir=str(path.parent))
    with pytest.raises(pid_package.PidFileAlreadyRunningError) as info:
        pidfile.check()
    assert info.value.pid == pid


def test_kill_cat_takes_line_2_for_a_pid(recorded):
    """Why the docs say never ``kill $(cat F)``: every line is an argument to kill (only
    signal 0 here, which sends nothing)."""
    path, _ = recorded
    said = subprocess.run(
        ["sh", "-c", 'kill -0 $(cat "$1")', "sh", str(path)], capture_output=True, text=True
    )
    assert said.returncode != 0


# ---- shimpid pid and shimpid signal: the safe ways from a shell ----------------------------------


def test_pid_prints_only_a_verified_pid(impl, cli, pid_path, sleeper, reaped_pid):
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)
    assert cli("pid", pid_path) == (0, f"{sleeper.pid}\n", "")
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid, 1))  # reused
    assert cli("pid", pid_path)[:2] == (3, "")
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(reaped_pid, 1))  # gone
    assert cli("pid", pid_path)[:2] == (3, "")
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid))  # legacy: not verified
    assert cli("pid", pid_path)[:2] == (3, "")
    assert cli("pid", "--allow-legacy", pid_path)[:2] == (0, f"{sleeper.pid}\n")
    pid_path.unlink()
    assert cli("pid", pid_path)[:2] == (3, "")
    assert cli("pid", "")[0] == 2


def test_signal_reaches_the_verified_process_only(impl, cli, pid_path):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # os.write in the handler: print() there could re-enter the buffered stdout that
            # print('ready') has not let go of yet (RuntimeError: reentrant call)
            "import os, signal, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: os.write(1, b'reload\\n'))\n"
            "os.write(1, b'ready\\n')\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "ready\n"
        impl.PidFileWriter.at(pid_path).write_for(child.pid)
        assert cli("signal", pid_path, "HUP")[:2] == (0, f"sent SIGHUP to {child.pid}\n")
        assert child.stdout.readline() == "reload\n" and child.poll() is None
        impl.PidFileWriter.at(pid_path).write(impl.PidRecord(child.pid, 1))  # not verified
        code, out, _ = cli("signal", pid_path, "TERM")
        assert code == 3 and out.startswith("not running: pid")
        assert child.poll() is None, "never signalled"
        assert cli("signal", pid_path, "FOO")[0] == 2
    finally:
        stop(child)


def test_pid_and_signal_exit_4_when_they_cannot_tell(impl, shared_dir, sleeper, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to be somebody else")
    path = os.path.join(shared_dir, "secret.pid")
    impl.PidFileWriter.at(path, mode=0o600).write_for(sleeper.pid)
    monkeypatch.setattr(_cli, "_backend", impl)
    monkeypatch.setattr(_rundir, "_backend", impl)
    monkeypatch.setattr(_operate, "_backend", impl)

    def child(out):
        sys.stdout = sys.stderr = open(out, "w", closefd=False)
        os.setuid(65534)
        codes = [_cli.main(["pid", path]), _cli.main(["signal", path, "HUP"])]
        print(f"exit {codes}", flush=True)

    code, said = run_in_child(child)
    assert code == 0 and said.endswith(b"exit [4, 4]\n"), said
    for command in (b"pid", b"signal"):
        assert b"shimpid: %s: cannot read %s: [Errno 13]" % (command, path.encode()) in said, said
    assert sleeper.poll() is None
