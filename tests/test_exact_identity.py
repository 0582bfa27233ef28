"""Exact identity: a pid reused within one clock tick, failures to look, another namespace's
/proc, thread ids, and the fallbacks where the kernel offers less. Real processes throughout;
whatever could signal a stranger runs in a pid namespace of its own."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shimpid
from _helpers import (
    bound_reader,
    build_probe,
    require_or_skip,
    require_pidfd_level,
    run_in_child,
    run_in_pid_namespace,
    script_prelude,
    stop,
)
from shimpid import Absent, Legacy, StorageError, Verified, _common, _pure

LEVELS = {"pidfs": _common.PIDFS, "pidfd": _common.PIDFD, "no pidfd": _common.NO_PIDFD}


@pytest.fixture(params=list(LEVELS))
def level(request, impl):
    """What the kernel offers: pidfs (6.9+), pidfds only (5.3-6.8), neither."""
    wanted = LEVELS[request.param]
    require_pidfd_level(impl, wanted, request.param)
    old = impl._set_pidfd_level(wanted)
    yield wanted
    impl._set_pidfd_level(old)


def start_time_from_proc(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rpartition(b")")[2].split()[19])


# ---- 1. a pid reused within one clock tick -------------------------------------------------------

REUSE = """
ns_last_pid = "/proc/sys/kernel/ns_last_pid"
if not os.access(ns_last_pid, os.W_OK):
    print(json.dumps("no ns_last_pid"))
    sys.exit(0)
trials = []
n = 0
# At least {trials} trials, and on until 3 of them reused within the tick (a loaded machine
# takes longer between the kill and the spawn, so fewer do).
while n < {trials} or (sum(1 for t in trials if t[1]) < 3 and n < 200):
    path = f"/dev/shm/shimpid-reuse-{{os.getpid()}}-{{n}}.pid"
    first = subprocess.Popen(["sleep", "60"])
    impl.PidFileWriter.at(path).write_for(first.pid)
    recorded = impl.process_start_time(first.pid)
    first.kill()
    first.wait()
    with open(ns_last_pid, "w") as f:  # the next process in this namespace gets first.pid
        f.write(str(first.pid - 1))
    stranger = subprocess.Popen(["sleep", "60"])
    same_tick = impl.process_start_time(stranger.pid) == recorded
    verdict = type(shimpid.PidFileReader.at(path).process_identity()).__name__
    stop = None
    if n == 0:  # the operator's stop must not kill the stranger either
        cli = subprocess.run([sys.executable, "-m", "shimpid", "stop", "--timeout", "2", path],
                             capture_output=True, text=True, env=dict(os.environ, {env}))
        stop = [cli.returncode, stranger.poll() is None]
    trials.append([stranger.pid == first.pid, same_tick, verdict, stop])
    stranger.kill()
    stranger.wait()
    if os.path.exists(path):
        os.unlink(path)
    n += 1
print(json.dumps(trials))
"""


def reuse_trials(impl, level: int, trials: int = 20) -> list:
    env = "PYTHONPATH=os.pathsep.join(sys.path), SHIMPID_PURE_PYTHON=" + (
        "'1'" if impl is _pure else "'0'"
    )
    script = script_prelude(impl, level) + REUSE.format(trials=trials, env=env)
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    if outcome == "no ns_last_pid":
        require_or_skip("/proc/sys/kernel/ns_last_pid is not writable here")
    assert all(reused for reused, *_ in outcome), "the stranger did not get the recorded pid"
    return outcome


def test_same_tick_reuse_is_never_verified_with_pidfs(impl):
    require_pidfd_level(impl, _common.PIDFS)
    trials = reuse_trials(impl, _common.PIDFS)
    same_tick = sum(1 for _, same, _, _ in trials if same)
    print(
        f"\nsame-tick reuse, {impl.__name__}: {same_tick} of {len(trials)} trials had the "
        f"recorded start time; verdicts: {[v for _, _, v, _ in trials]}"
    )
    assert same_tick >= 3, "too few same-tick reuses for the test to mean anything"
    assert [v for _, _, v, _ in trials] == ["Absent"] * len(trials)
    code, stranger_lives = trials[0][3]
    assert code == 0 and stranger_lives, "stop left the stranger alone"


def test_start_times_alone_tell_processes_apart_only_across_ticks(impl):
    """The fallback's documented limit: without pidfs, a same-tick reuse reads Verified."""
    trials = reuse_trials(impl, _common.PIDFD if impl._pidfd_level() else _common.NO_PIDFD)
    for _, same_tick, verdict, _ in trials:
        assert verdict == ("Verified" if same_tick else "Absent")


# ---- 2. a failure to look is not an answer -------------------------------------------------------


def exhaust_descriptors() -> None:
    """From now on every open() fails with EMFILE: the limit is the lowest free descriptor."""
    lowest = os.dup(0)
    os.close(lowest)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (lowest, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


def test_no_descriptors_left_raises_instead_of_absent(impl, level, pid_path, sleeper):
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)
    reader = shimpid.PidFileReader.at(pid_path)
    start = impl.process_start_time(sleeper.pid)
    writer = impl.PidFileWriter.at(pid_path.parent / "other.pid")

    def child(out):
        from shimpid import _cli

        exhaust_descriptors()
        results = {}
        for name, call in [
            ("process_identity", reader.process_identity),
            ("open_process", reader.open_process),
            ("classify", lambda: impl._classify(sleeper.pid, start, None)),
            ("is_process_alive", lambda: impl.is_process_alive(sleeper.pid)),
            ("process_start_time", lambda: impl.process_start_time(sleeper.pid)),
            ("write_for", lambda: writer.write_for(sleeper.pid)),
        ]:
            try:
                results[name] = repr(call())
            except OSError as err:
                results[name] = errno.errorcode.get(err.errno, str(err.errno))
        for command in ("status", "stop"):
            results[command] = _cli.main([command, str(pid_path)])
        os.write(out, json.dumps(results).encode())

    code, said = run_in_child(child)
    assert code == 0, said
    results = json.loads(said)
    expected = {
        "process_identity": "EMFILE",
        "open_process": "EMFILE",
        "classify": "EMFILE",
        "is_process_alive": "EMFILE",
        "process_start_time": "EMFILE",
        "write_for": "EMFILE",
        "status": 4,
        "stop": 4,
    }
    assert results == expected, results
    assert sleeper.poll() is None and reader.process_identity() == Verified(sleeper.pid)


# ---- 3. another pid namespace's /proc ------------------------------------------------------------

FOREIGN = """
from shimpid import ForeignProcError
child = subprocess.Popen(["sleep", "60"])  # pid 2 here; /proc/2 is the host's kthreadd
out = dict(pid=child.pid, proc_self=os.readlink("/proc/self"))

def attempt(name, call):
    try:
        out[name] = repr(call())
    except ForeignProcError:
        out[name] = "ForeignProcError"
    except OSError as err:
        out[name] = f"OSError {{err.errno}}"

# a pid that is a thread's in the host's /proc: no verdict may come from that /proc either
host_thread = next(int(t) for p in os.listdir("/proc") if p.isdigit()
                   for t in os.listdir(f"/proc/{{p}}/task") if t != p)
while True:  # take that pid here
    stranger = subprocess.Popen(["sleep", "60"])
    if stranger.pid >= host_thread:
        break
    stranger.kill()
    stranger.wait()
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(host_thread - 1))
stranger.kill()
stranger.wait()
same = subprocess.Popen(["sleep", "60"])
out["host_thread"] = same.pid == host_thread
attempt("alive(host thread)", lambda: impl.is_process_alive(same.pid))
same.kill()
same.wait()

writer = impl.PidFileWriter.at("{dir}/child.pid")
attempt("write_for", lambda: writer.write_for(child.pid))
attempt("write_for given a start time", lambda: writer._write_for(child.pid, 12345))
attempt("process_start_time", lambda: impl.process_start_time(child.pid))
attempt("is_process_alive", lambda: impl.is_process_alive(child.pid))
import shimpid
shimpid._spawn.PidFileWriter = impl.PidFileWriter
shimpid._spawn._clock_agreed = shimpid._spawn.CLOCK_CHECKS  # the clock trusted: no /proc read
attempt("spawn", lambda: shimpid.spawn(["sleep", "60"], "{dir}/spawned.pid"))
# a child records itself: /proc/self is always right, and pidfs needs no /proc
writer_child = subprocess.Popen([sys.executable, "-c", {self_write!r}])
while not os.path.exists("{dir}/self.pid"):
    time.sleep(0.01)
attempt("self-written", lambda: shimpid.PidFileReader.at("{dir}/self.pid").process_identity())
with open("{dir}/self.pid", "rb") as f:
    record = impl.PidRecord.decode(f.read())
impl.PidFileWriter.at("{dir}/start-only.pid", identity_line=False).write(record)
attempt("start time only",
        lambda: shimpid.PidFileReader.at("{dir}/start-only.pid").process_identity())
writer_child.kill()
writer_child.wait()
print(json.dumps(out))
"""

SELF_WRITE = """
import importlib, sys, time
sys.path[:0] = {path!r}
impl = importlib.import_module({module!r})
impl._set_pidfd_level({level})
impl.PidFileWriter.at("{dir}/self.pid.tmp").write_current()
import os
os.rename("{dir}/self.pid.tmp", "{dir}/self.pid")
time.sleep(60)
"""


def test_another_namespaces_proc_is_refused(impl, level, shared_dir):
    self_write = SELF_WRITE.format(path=sys.path, module=impl.__name__, level=level, dir=shared_dir)
    script = script_prelude(impl, level) + FOREIGN.format(dir=shared_dir, self_write=self_write)
    result = run_in_pid_namespace(script, mount_proc=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["pid"] == 2 and out["proc_self"] != "1", "the host's /proc, as intended"
    assert out["write_for"] == "ForeignProcError"
    assert out["write_for given a start time"] == "ForeignProcError"  # given, /proc still asked
    assert out["process_start_time"] == "ForeignProcError"
    assert out["spawn"] == "ForeignProcError"
    assert not os.path.exists(os.path.join(shared_dir, "child.pid"))
    assert not os.path.exists(os.path.join(shared_dir, "spawned.pid"))
    assert out["start time only"] == "ForeignProcError"
    if level == _common.PIDFS:  # the pidfs fingerprint needs no /proc at all
        assert out["is_process_alive"] == "True"
        assert out["self-written"].startswith("Verified(")
    elif level == _common.PIDFD:
        assert out["is_process_alive"] == "True"
        assert out["self-written"] == "ForeignProcError"
    else:
        assert out["is_process_alive"] == "ForeignProcError"
        assert out["self-written"] == "ForeignProcError"
    assert out["host_thread"], "the namespace's pid matched a thread id in the host's /proc"
    assert out["alive(host thread)"] == (
        "True" if level != _common.NO_PIDFD else "ForeignProcError"
    )


# ---- 4. a thread id is not a process -------------------------------------------------------------


@pytest.fixture
def thread_id():
    """The kernel id of a live thread of this process (not its thread-group leader)."""
    started, done = threading.Event(), threading.Event()
    ids = []

    def run():
        ids.append(threading.get_native_id())
        started.set()
        done.wait()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    yield ids[0]
    done.set()
    thread.join()


def test_a_thread_id_is_not_a_live_process(impl, level, pid_path, thread_id):
    assert thread_id != os.getpid()
    os.kill(thread_id, 0)  # the kernel answers for a thread id as for a process
    assert impl.is_process_alive(thread_id) is False
    assert impl.process_start_time(thread_id) is None
    with pytest.raises(ProcessLookupError):
        impl.PidFileWriter.at(pid_path).write_for(thread_id)
    assert not pid_path.exists()
    # a planted record: the thread's id and its own start time
    planted = impl.PidRecord(thread_id, start_time_from_proc(thread_id))
    impl.PidFileWriter.at(pid_path).write(planted)
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.process_identity() == Absent()
    assert reader.open_process() is None
    assert reader.open_process(allow_legacy=True) is None
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(thread_id))  # legacy
    assert reader.process_identity() == Absent()
    assert reader.open_process(allow_legacy=True) is None


@pytest.fixture(scope="module")
def leader_exits(tmp_path_factory):
    return build_probe("leader_exits", tmp_path_factory.mktemp("probe"), "-pthread")


def test_a_process_whose_main_thread_exited_is_alive(impl, level, pid_path, leader_exits):
    """/proc calls it a zombie (State Z) while its other thread runs on: still alive, Verified."""
    child = subprocess.Popen([leader_exits], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        while True:  # the main thread is gone once /proc shows the leader as a zombie
            with open(f"/proc/{child.pid}/status") as f:
                if "State:\tZ" in f.read():
                    break
        assert impl.is_process_alive(child.pid)
        for identity_line in (True, False):  # pidfs, and start time alone
            impl.PidFileWriter.at(pid_path, identity_line=identity_line).write_for(child.pid)
            assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(child.pid)
    finally:
        stop(child)


def proc_comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read()


def test_a_process_in_many_groups_is_told(impl, level, pid_path):
    """Its /proc/<pid>/status is longer than the read (Groups comes before Threads): what is
    needed is there all the same."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to start a process in many groups")
    groups = range(100_000, 101_500)
    setpriv = shutil.which("setpriv")  # (PyPy's Popen refuses so many extra_groups)
    if setpriv is not None:
        argv = [setpriv, "--groups", ",".join(map(str, groups)), "sleep", "60"]
        child = subprocess.Popen(argv)
    elif sys.implementation.name == "cpython":
        child = subprocess.Popen(["sleep", "60"], extra_groups=groups)
    else:
        require_or_skip("setpriv (util-linux) not found, and this Popen takes few extra_groups")
    try:
        deadline = time.monotonic() + 10
        while proc_comm(child.pid) != "sleep\n":  # its groups set, and exec'd
            assert time.monotonic() < deadline
            time.sleep(0.001)
        with open(f"/proc/{child.pid}/status", "rb") as f:
            assert f.read().index(b"\nThreads:") > _common.STATUS_READ_BYTES
        assert impl.is_process_alive(child.pid)
        assert impl.process_start_time(child.pid) == start_time_from_proc(child.pid)
        impl.PidFileWriter.at(pid_path).write_for(child.pid)
        assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(child.pid)
    finally:
        stop(child)


# ---- 5. the fallbacks where the kernel offers less -----------------------------------------------


def test_each_level_verifies_and_refuses(impl, level, pid_path, sleeper, zombie, reaped_pid):
    writer = impl.PidFileWriter.at(pid_path)
    reader = shimpid.PidFileReader.at(pid_path)
    writer.write_for(sleeper.pid)
    assert (reader.read_pidfs_id() is not None) == (level == _common.PIDFS)
    assert reader.process_identity() == Verified(sleeper.pid)
    writer.write(impl.PidRecord(sleeper.pid))
    assert reader.process_identity() == Legacy(sleeper.pid)
    writer.write(impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid) + 1))
    assert reader.process_identity() == Absent()
    writer.write_for(zombie.pid)
    assert reader.process_identity() == Absent()
    writer.write(impl.PidRecord(reaped_pid, 5))
    assert reader.process_identity() == Absent()
    assert impl.is_process_alive(sleeper.pid) and not impl.is_process_alive(zombie.pid)
    assert not impl.is_process_alive(reaped_pid)
    assert impl.process_start_time(zombie.pid) == start_time_from_proc(zombie.pid)


def test_a_file_from_an_older_kernel_is_verified_by_its_start_time(impl, pid_path, sleeper):
    """No pidfs field (written on Linux 5.3-6.8, or by the reference): the start time decides."""
    record = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid))
    impl.PidFileWriter.at(pid_path, identity_line=False).write(record)
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(sleeper.pid)
    pid_path.write_bytes(
        record.encode() + b"\nshimpid boot=" + _common.CURRENT_BOOT_ID.encode() + b"\n"
    )
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(sleeper.pid)


def test_a_pidfs_fingerprint_alone_is_proof(impl, pid_path, sleeper):
    """A file with a pidfs inode and no start time (no /proc when written): Verified by pidfs,
    Legacy where the reader has no pidfs."""
    require_pidfd_level(impl, _common.PIDFS)
    fd = os.pidfd_open(sleeper.pid)
    inode = os.fstat(fd).st_ino
    os.close(fd)
    pid_path.write_bytes(b"%d\n\n\nshimpid pidfs=%d\n" % (sleeper.pid, inode))
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.process_identity() == Verified(sleeper.pid)
    old = impl._set_pidfd_level(_common.PIDFD)
    try:
        assert reader.process_identity() == Legacy(sleeper.pid)
    finally:
        impl._set_pidfd_level(old)
    pid_path.write_bytes(b"%d\n\n\nshimpid pidfs=%d\n" % (sleeper.pid, inode + 1))
    assert reader.process_identity() == Absent()


def test_open_process_pins_before_it_checks(impl, pid_path, sleeper):
    """Start-time path: pidfd_open(pid) comes before the /proc read that checks the identity
    (seen with strace), so the handle's pidfd refers to the process that was checked."""
    require_pidfd_level(impl, _common.PIDFD, "pidfds")
    strace = shutil.which("strace")
    if strace is None:
        require_or_skip("strace not found")
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)
    script = script_prelude(impl, _common.PIDFD) + (
        f"h = shimpid.PidFileReader.at({str(pid_path)!r}).open_process()\nassert h is not None\n"
    )
    result = subprocess.run(
        [strace, "-f", "-e", "trace=pidfd_open,openat", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = [
        line
        for line in result.stderr.splitlines()
        if f"pidfd_open({sleeper.pid}" in line or f"/proc/{sleeper.pid}/stat" in line
    ]
    assert len(calls) == 2 and "pidfd_open" in calls[0] and "/stat" in calls[1], calls


# ---- the file format: lines 3 and 4 --------------------------------------------------------------

BOOT = _common.CURRENT_BOOT_ID
OTHER = "0000abcd-1111-2222-3333-4444444444ef"


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"", (None, None, None)),
        (b"\n", (None, None, None)),
        (b"services-mux-v1\n", ("services-mux-v1", None, None)),
        (b" services-mux-v1 \r\n", ("services-mux-v1", None, None)),
        (OTHER.encode() + b"\n", (None, OTHER, None)),  # shimpid 0.1's boot line
        (b"\nshimpid boot=" + OTHER.encode() + b" pidfs=42\n", (None, OTHER, 42)),
        (b"x\nshimpid pidfs=42 boot=" + OTHER.encode() + b"\n", ("x", OTHER, 42)),
        (b"\nshimpid pidfs=42 future=1 boot=" + OTHER.encode() + b"\n", (None, OTHER, 42)),
        (b"\nshimpid pidfs=42 pidfs=43\n", (None, None, 42)),  # the first counts
        (b"\nshimpid pidfs=0\n", (None, None, None)),
        (b"\nshimpid pidfs=18446744073709551615\n", (None, None, 2**64 - 1)),
        (b"\nshimpid pidfs=18446744073709551616\n", (None, None, None)),
        (b"\nshimpid pidfs=+5\n", (None, None, None)),
        (b"\nshimpid pidfs=005\n", (None, None, 5)),
        (b"\nshimpid boot=" + OTHER.upper().encode() + b"\n", (None, None, None)),
        (b"\nboot=" + OTHER.encode() + b" pidfs=42\n", (None, None, None)),  # no tag
        (b"\nshimpid: pidfs=42\n", (None, None, None)),
        (b"\n\nshimpid pidfs=42\n", (None, None, None)),  # line 5
        ("\n \u3000shimpid pidfs=42\u2028\n".encode(), (None, None, 42)),  # Unicode trim
        # what this process's writers write (the readers' fast paths), and near misses
        (b"\n" + _common.OWN_PIDFS + b"42\n", (None, BOOT, 42)),
        (b"\n" + _common.OWN_PIDFS + b"042\n", (None, BOOT, 42)),
        (b"\n" + _common.OWN_PIDFS + b"42 x=1\n", (None, BOOT, 42)),
        (b"\n" + _common.OWN_PIDFS + b"0\n", (None, BOOT, None)),
        (b"cap\n" + _common.OWN_PIDFS[:-7] + b"\n", ("cap", BOOT, None)),
    ],
)
def test_lines_3_and_4(impl, pid_path, tail, expected):
    pid_path.write_bytes(b"5\n6\n" + tail)
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.read() == impl.PidRecord(5, 6)
    assert _common.parse_extras(b"5\n6\n" + tail) == expected
    assert (reader.read_boot_id(), reader.read_pidfs_id()) == expected[1:]


def test_extras_are_the_line_4_table():
    """Extras has line 3's capability, then one attribute per row of _common.LINE4_FIELDS, in
    the table's order: a new field of line 4 is a row there (and its annotation)."""
    names = ("capability", "boot_id", "pidfs_id")
    assert tuple(_common.Extras.__annotations__) == names
    assert sorted(at for at, _ in _common.LINE4_FIELDS.values()) == [1, 2]
    extras = _common.Extras("cap", OTHER, 7)
    assert tuple(getattr(extras, name) for name in names) == ("cap", OTHER, 7)
    assert repr(extras) == f"Extras(capability='cap', boot_id='{OTHER}', pidfs_id=7)"
    assert _common.Extras(capability="cap", boot_id=OTHER, pidfs_id=7) == extras
    assert _common.NO_EXTRAS == (None, None, None)
    with pytest.raises(TypeError):
        _common.Extras("cap", OTHER)
    with pytest.raises(AttributeError):
        extras.pidfs_id = 8  # type: ignore[misc]


def own_pidfs_fields(inode: int) -> list[bytes]:
    """What may follow the writers' prefix on line 4: their pidfs field, and its near misses."""
    return [
        b"",
        b" pidfs=%d" % inode,
        b" pidfs=%d" % (inode + 1),
        b" pidfs=0%d" % inode,
        b" pidfs=0",
        b" pidfs=",
        b" pidfs=1234567890123456789",  # 19 digits: the one pass's longest
        b" pidfs=18446744073709551615",  # 20 digits, the largest
        b" pidfs=18446744073709551616",
        b" pidfs=%d x=1" % inode,
        b" pidfs=%d " % inode,
        b" pidfs:%d" % inode,
        b" pidfz=%d" % inode,
        b"x",
    ]


@pytest.mark.parametrize("line3", [b"", b"cap", (BOOT or OTHER).encode(), OTHER.encode()])
@pytest.mark.parametrize("end", [b"\n", b"", b"\r\n", b"\n\n"])
@pytest.mark.parametrize("field", range(15))  # 14: no line 4
@pytest.mark.parametrize("edit", [None, "first", "last"])
def test_the_one_pass_at_each_edge_is_the_rules_answer(
    extension, tmp_path, line3, end, field, edit
):
    """Line 4 as this process's writers write it, and each near miss, read by the extension's
    one pass (scan, ls, the reader's verdict) and by the general rules: the same record, Extras
    and verdict. The record is this process's, so a wrong pidfs answer shows as a verdict. The
    writers' prefix is also tried with its first or its last byte changed (the last: another
    boot's id, one hex digit off, where this boot's is known)."""
    from shimpid import _rundir

    own = _pure.PidRecord.current()
    fd = os.pidfd_open(own.pid)
    inode = os.fstat(fd).st_ino
    os.close(fd)
    fields = own_pidfs_fields(inode)
    prefix = bytearray(_common.OWN_PIDFS[:-7])
    if edit == "first":
        prefix[:1] = b"S"
    elif edit == "last":
        prefix[-1:] = b"1" if prefix[-1:] == b"0" else b"0"
    line4 = bytes(prefix) + fields[field] if field < len(fields) else b""
    data = b"%d\n%d\n%s\n%s%s" % (own.pid, own.start_time, line3, line4, line4 and end)
    path = tmp_path / "shim.pid"
    path.write_bytes(data)
    with bound_reader(_pure):
        expected = shimpid.PidFileReader.at(path).process_identity()
    with bound_reader(extension):
        assert shimpid.PidFileReader.at(path).process_identity() == expected
    saved, _rundir._backend = _rundir._backend, extension
    try:
        [(_, verdict, read, _, record, extras, _)] = _rundir.scan_reads(
            tmp_path, "*.pid", True, None
        )
    finally:
        _rundir._backend = saved
    assert (read, verdict) == (data, expected)
    assert record == extension.PidRecord.decode(data)
    assert extras == _common.parse_extras(data)


@st.composite
def own_files(draw):
    """This process's record with lines 3 and 4 drawn from what matters to a verdict, mutated."""
    own = _pure.PidRecord.current()
    fd = os.pidfd_open(own.pid)
    inode = os.fstat(fd).st_ino
    os.close(fd)
    start = draw(st.sampled_from([own.start_time, own.start_time + 1, None]))
    line3 = draw(
        st.sampled_from(
            [b"", b"services-mux-v1", BOOT.encode(), OTHER.encode(), b"\xc2\xa0", b"a b"]
        )
    )
    fields = draw(
        st.lists(
            st.sampled_from(
                [
                    b"boot=" + BOOT.encode(),
                    b"boot=" + OTHER.encode(),
                    b"pidfs=%d" % inode,
                    b"pidfs=%d" % (inode + 1),
                    b"pidfs=0%d" % inode,
                    b"x=y",
                    b"",
                    b"pidfs=",
                ]
            ),
            max_size=4,
        )
    )
    tag = draw(st.sampled_from([b"shimpid", b"shimpid", b"shimpi", b" shimpid"]))
    line4 = b" ".join([tag, *fields])
    if draw(st.booleans()):  # as this process's writers write it (the one-pass reader's shape)
        line4 = _common.OWN_PIDFS[:-7] + draw(st.sampled_from(own_pidfs_fields(inode)))
    data = bytearray(
        b"%d\n%s\n%s\n%s\n" % (own.pid, b"" if start is None else b"%d" % start, line3, line4)
    )
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from([b"\n", b" ", b"\r", b"\xff", b"9", b"0"]))
        if draw(st.booleans()):
            data[where:where] = byte  # inserted
        else:
            data[where : where + 1] = byte  # in place of one
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@given(own_files())
def test_the_extensions_reader_agrees_with_the_rules(extension, tmp_path_factory, data):
    """The Cython reader reads what writers write in one C pass, and everything else through
    the general rules (_common.parse_extras): the verdicts must be the pure backend's."""
    path = tmp_path_factory.mktemp("agree") / "shim.pid"
    path.write_bytes(data)
    verdicts = []
    for backend in (_pure, extension):
        try:
            with bound_reader(backend):
                verdicts.append(shimpid.PidFileReader.at(path).process_identity())
        except StorageError as err:  # pragma: no cover - a failure to read is a test failure
            verdicts.append(err)
    assert verdicts[0] == verdicts[1]


@given(own_files())
def test_what_the_extension_decodes_in_one_pass_is_the_rules_answer(
    extension, tmp_path_factory, data
):
    """The Extras the extension hands back from its one C pass (shimpid ls) are
    _common.parse_extras' of the same bytes, for every mutation of what writers write."""
    from shimpid import _rundir

    directory = tmp_path_factory.mktemp("extras")
    (directory / "shim.pid").write_bytes(data)
    saved, _rundir._backend = _rundir._backend, extension
    try:
        [(_, _, read, _, record, extras, _)] = _rundir.scan_reads(directory, "*.pid", True, None)
    finally:
        _rundir._backend = saved
    assert read == data
    if extras is not None:
        assert record == extension.PidRecord.decode(data)
        assert extras == _common.parse_extras(data)
        assert type(extras) is _common.Extras
