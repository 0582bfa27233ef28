"""An operator's commands and cleaners racing the writers they watch.

1. status, show and ls decide and print from one read: while a writer alternates atomically
   between a dead record and a live one, every answer names one record and its own verdict.
2. Removal never loses a record written meanwhile: in-place writers (shimpid's, and boxlite's
   ``std::fs::write``) alternate a stale record and their own live one while cleaners loop, and
   every live record stays (perhaps set aside for a moment, then put back). shimpid's writer
   whose open reaches its file only once a remover has let go of it (unlinked, or leased) writes
   again at the path.
3. Removal under random KeyboardInterrupts and EMFILE: nothing is left aside, no live record is
   lost, and clean raises nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

import shimpid
from _helpers import require_or_skip, rounds, script_prelude, stop
from shimpid import _rundir


def spawn(impl, body: str, prefix: tuple[str, ...] = (), **params) -> subprocess.Popen:
    """``python -c`` of body after script_prelude(impl), its parameters as JSON in sys.argv[1]
    and the backend named in SHIMPID_PURE_PYTHON too (under ``prefix``, a command's start)."""
    # Not measured by coverage (tox -e coverage): a handler raising inside its tracer would
    # disable the Cython plugin there, and the records of the .pyx would not combine.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE")}
    env["SHIMPID_PURE_PYTHON"] = "1" if impl.__name__ == "shimpid._pure" else "0"
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", script_prelude(impl) + body, json.dumps(params)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(child: subprocess.Popen, timeout: float = 120) -> dict:
    """The JSON a child printed last, once it has exited cleanly."""
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        stop(child)
    assert child.returncode == 0, f"child failed ({child.returncode}):\n{err}"
    return json.loads(out.splitlines()[-1])


def aside_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(_rundir.ASIDE_PREFIX))


# ---- 1. status, show and ls answer from one read ----------------------------------------------

ALTERNATING_WRITER = """
args = json.loads(sys.argv[1])
writer = impl.PidFileWriter.at(args["path"])
dead = impl.PidRecord(args["dead"], 1)
writer.write(dead)
print("ready", flush=True)
while True:
    writer.write(dead)
    writer.write_for(args["live"])
"""


def status_answer(ran, path, live, dead):
    code, out, err = ran
    if (code, out, err) == (0, f"verified {live[0]}\n", ""):
        return "live"
    if (code, out, err) == (1, f"absent {dead}\n", ""):
        return "dead"
    return None


def show_answer(ran, path, live, dead):
    code, out, err = ran
    if err:
        return None
    report = json.loads(out)
    if (code, report["state"], report["pid"], report["start_time"]) == (0, "verified", *live):
        return "live" if report["live_start_time"] == live[1] and "why" not in report else None
    if (code, report["state"], report["pid"], report["start_time"]) == (1, "absent", dead, 1):
        return "dead" if report.get("why") else None
    return None


def ls_answer(ran, path, live, dead):
    code, out, err = ran
    if code != 0 or err:
        return None
    listing = json.loads(out)
    if len(listing["files"]) != 1 or listing["files"][0]["path"] != str(path):
        return None
    row, summary = listing["files"][0], listing["summary"]
    if (row["state"], row["pid"], row["start_time"]) == ("verified", *live):
        return "live" if summary["verified"] == 1 and summary["absent"] == 0 else None
    if (row["state"], row["pid"], row["start_time"]) == ("absent", dead, 1):
        return "dead" if summary["absent"] == 1 and summary["verified"] == 0 else None
    return None


COMMANDS = {
    "status": (lambda path: ("status", path), status_answer),
    "show": (lambda path: ("show", "--json", path), show_answer),
    "ls": (lambda path: ("ls", "--json", path.parent), ls_answer),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_answer_comes_from_one_read_of_an_alternating_file(
    impl, cli, pid_path, sleeper, reaped_pid, command
):
    """A writer replaces the pid file, as fast as it can, by a dead record and a live one in
    turn. Every answer is one of the two, whole: never the live pid called absent, nor the dead
    one verified, nor a pid with the other record's start time."""
    args, answer = COMMANDS[command]
    live = (sleeper.pid, impl.process_start_time(sleeper.pid))
    writer = spawn(impl, ALTERNATING_WRITER, path=str(pid_path), dead=reaped_pid, live=live[0])
    seen = {"live": 0, "dead": 0}
    mismatches = []
    try:
        assert writer.stdout.readline() == "ready\n", writer.stderr.read()
        for _ in range(rounds(300, 1000)):
            ran = cli(*args(pid_path))
            said = answer(ran, pid_path, live, reaped_pid)
            if said is None:
                mismatches.append(tuple(ran))
            else:
                seen[said] += 1
    finally:
        stop(writer)
    assert mismatches == [], f"{len(mismatches)} inconsistent answers, the first: {mismatches[:3]}"
    assert seen["live"] and seen["dead"], f"the race was not exercised: {seen}"


# ---- 2. in-place writers against looping cleaners -----------------------------------------------

IN_PLACE_ALTERNATOR = """
import random
args = json.loads(sys.argv[1])
path, me = args["path"], os.getpid()
stale = impl.PidRecord(args["dead"], 1)
writer = impl.PidFileWriter.at(path, atomic=False)
reader = shimpid.PidFileReader.at(path)


def std_fs_write(data):  # boxlite's way: Rust's std::fs::write
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


if args["kind"] == "shimpid":
    write_stale, write_live = (lambda: writer.write(stale)), writer.write_current
else:
    live = impl.PidRecord.current().encode()
    write_stale, write_live = (lambda: std_fs_write(stale.encode())), (lambda: std_fs_write(live))

rng = random.Random(args["seed"])
lost = late = 0
longest = 0.0
for _ in range(args["rounds"]):
    write_stale()
    time.sleep(rng.choice((0, 0, rng.uniform(0, 0.002))))  # a cleaner may come for it now
    write_live()
    written = time.monotonic()
    while True:  # set aside for a moment, the record is put back: it must be there again
        try:
            verdict = reader.process_identity()
        except OSError:
            verdict = None
        if type(verdict).__name__ == "Verified" and verdict.pid == me:
            break
        if time.monotonic() - written > 3:
            lost += 1
            break
        time.sleep(0.001)
    waited = time.monotonic() - written
    late += waited > 0.0005
    longest = max(longest, waited)
print(json.dumps({"lost": lost, "late": late, "longest": longest}))
"""

LOOPING_CLEANER = """
from shimpid import _operate, _rundir
import shimpid
_rundir._backend = _operate._backend = impl
args = json.loads(sys.argv[1])
removed = kept = runs = 0
while not os.path.exists(args["stop"]):
    for removal in shimpid.clean(args["directory"]):
        removed += removal.removed
        kept += not removal.removed
    runs += 1
print(json.dumps({"runs": runs, "removed": removed, "kept": kept}))
"""


@pytest.mark.parametrize("kind", ["shimpid", "std_fs_write"])
def test_looping_cleaners_never_lose_a_record_written_in_place(impl, tmp_path, reaped_pid, kind):
    """Four writers, each with its own pid file in one directory, write in place a stale record
    then their own live one, again and again, while two cleaners loop over the directory. After
    each live write the record is there (at once, or once put back): none is lost."""
    run = tmp_path / "run"
    run.mkdir()
    halt = tmp_path / "stop"
    n = rounds(100, 1000)
    seed = random.randrange(2**32)
    cleaners = [spawn(impl, LOOPING_CLEANER, directory=str(run), stop=str(halt)) for _ in range(2)]
    writers = [
        spawn(
            impl,
            IN_PLACE_ALTERNATOR,
            path=str(run / f"writer-{i}.pid"),
            dead=reaped_pid,
            kind=kind,
            rounds=n,
            seed=seed + i,
        )
        for i in range(4)
    ]
    try:
        written = [outcome(writer) for writer in writers]
    finally:
        halt.touch()
        cleaned = [outcome(cleaner) for cleaner in cleaners]
    lost = sum(w["lost"] for w in written)
    summary = f"seed {seed}: writers {written}, cleaners {cleaned}"
    print(f"\n{kind}/{impl.BACKEND}: lost {lost} of {4 * n}; {summary}")
    assert lost == 0, f"{lost} of {4 * n} live records lost ({summary})"
    assert aside_files(run) == [], summary
    assert sum(c["removed"] for c in cleaned) > 0, f"no stale record was removed: {summary}"


IN_PLACE_ONCE = """
args = json.loads(sys.argv[1])
impl.PidFileWriter.at(args["path"], atomic=False).write_current()
print(json.dumps({"pid": os.getpid()}))
"""


def stalled_opens(path, inject: str) -> tuple[str, ...]:
    """strace, tampering only with the opens of ``path`` (``inject``: strace's words)."""
    strace = shutil.which("strace")
    if strace is None:
        require_or_skip("strace not found")
    trace = ("-qq", "-f", "-o", os.devnull, "-P", str(path), "-e", "trace=openat")
    return (str(strace), *trace, "-e", f"inject=openat:{inject}")


def wait_for(condition, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the writer never got there"
        time.sleep(0.001)


def held_open(path) -> bool:
    """Whether some process has the file at path open (its writer, here)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                        return True
    return False


@pytest.mark.parametrize("there", [False, True], ids=["new", "stale file there"])
def test_an_in_place_write_into_a_file_removed_meanwhile_is_made_again(
    impl, tmp_path, reaped_pid, there
):
    """A remover that judged the file unlinks it as the writer's open reaches it (an open that
    looked the name up before the file went aside, and stalled: here strace holds the open for
    2 s). The writer finds its file unlinked, and writes again, at the path."""
    path = tmp_path / "w.pid"
    if there:
        path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    writer = spawn(
        impl, IN_PLACE_ONCE, prefix=stalled_opens(path, "delay_exit=2000000:when=1"), path=str(path)
    )
    wait_for(lambda: held_open(path), writer)  # opened; the open has not returned
    path.unlink()
    pid = outcome(writer)["pid"]
    assert impl.PidRecord.decode(path.read_bytes()).pid == pid


def test_an_in_place_write_never_replaces_a_newer_file_put_there_as_it_wrote(
    impl, tmp_path, reaped_pid
):
    """An atomic writer (or a lock) puts a newer record at the path while an in-place writer's
    open is stalled (strace, 2 s): the in-place write finds its file unlinked, writes again only
    where nothing is, and the newer record stands."""
    path = tmp_path / "w.pid"
    writer = spawn(
        impl, IN_PLACE_ONCE, prefix=stalled_opens(path, "delay_exit=2000000:when=1"), path=str(path)
    )
    wait_for(path.exists, writer)  # created; the open has not returned
    newer = impl.PidRecord(reaped_pid, 7)
    impl.PidFileWriter.at(path).write(newer)
    outcome(writer)
    assert impl.PidRecord.decode(path.read_bytes()) == newer


def test_an_in_place_write_that_meets_a_removers_lease_looks_the_path_up_again(impl, tmp_path):
    """A remover holds a write lease on the file it judges (and will unlink). The writer's open
    meets the lease (it opens without blocking: EWOULDBLOCK), pauses and looks the path up
    again, once the remover has let go: its record is at the path, the judged file untouched.
    (strace slows the writer's later opens, so that the test has time to act as the remover.)"""
    path, aside = tmp_path / "w.pid", tmp_path / "aside"
    path.write_bytes(b"1\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)  # ignored, not SIGIO: it would end pytest
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        writer = spawn(
            impl,
            IN_PLACE_ONCE,
            prefix=stalled_opens(path, "delay_enter=300000:when=2+"),
            path=str(path),
        )
        wait_for(lambda: fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK, writer)
        os.rename(path, aside)
    finally:
        os.close(fd)  # and with it the lease
    pid = outcome(writer)["pid"]
    assert impl.PidRecord.decode(path.read_bytes()).pid == pid
    assert aside.read_bytes() == b"1\n"


ONE_CLEAN = """
from shimpid import _operate, _rundir
import shimpid
_rundir._backend = _operate._backend = impl
args = json.loads(sys.argv[1])
_rundir.GRACE = args["grace"]
print(json.dumps([list(removal) for removal in shimpid.clean(args["directory"])]))
"""


def test_a_removal_judges_the_file_only_once_a_stalled_open_has_reached_it(
    impl, tmp_path, reaped_pid
):
    """An in-place writer looked the name up before the file went aside, and its open reaches
    the file only after the move (emulated: an O_PATH descriptor taken before, reopened through
    /proc after). The remover judges the file only a grace period after the move (2 s here), by
    when that writer has written: the record is put back, never unlinked unread."""
    run = tmp_path / "run"
    run.mkdir()
    path = run / "w.pid"
    impl.PidFileWriter.at(path).write(impl.PidRecord(reaped_pid, 1))
    o_path = getattr(os, "O_PATH", 0o10000000)  # Linux's: PyPy's os does not name it
    looked_up = os.open(path, o_path | os.O_CLOEXEC)  # no open file: no lease is refused
    try:
        cleaner = spawn(impl, ONE_CLEAN, directory=str(run), grace=2.0)
        wait_for(lambda: aside_files(run) != [], cleaner)
        time.sleep(0.2)  # well inside the grace period: a remover without one has judged by now
        reached = os.open(f"/proc/self/fd/{looked_up}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(reached, 0)
            os.write(reached, impl.PidRecord.current().encode())
        finally:
            os.close(reached)
    finally:
        os.close(looked_up)
    removals = outcome(cleaner)
    assert removals == [[str(path), f"kept: {_rundir.CHANGED}", False]]
    assert impl.PidRecord.decode(path.read_bytes()).pid == os.getpid()
    assert aside_files(run) == []


def test_a_long_clean_lets_another_remover_have_its_turn(impl, tmp_path, reaped_pid):
    """clean() of many stale files settles them in batches and lets go of the directory's turn
    between batches: a removal of another file there (as stop() makes) gets its turn while
    clean() runs, not only once it has finished (or is refused after TURN_LIMIT)."""
    run = tmp_path / "run"
    run.mkdir()
    stale = impl.PidRecord(reaped_pid, 1).encode()
    for n in range(15_000):
        (run / f"{n:05d}.pid").write_bytes(stale)
    mine = run / "zzz.pid"  # the last name clean() comes to
    mine.write_bytes(stale)
    cleaner = spawn(impl, ONE_CLEAN, directory=str(run), grace=_rundir.GRACE)
    wait_for(lambda: aside_files(run) != [], cleaner)
    directory = _rundir.open_directory(run, secure=False)
    read = _rundir.read_at(directory, b"zzz.pid")
    try:
        assert _rundir.remove_at(directory, read.name, read) == (True, None)
    finally:
        os.close(directory)
    assert cleaner.poll() is None, "the removal waited for the whole clean()"
    assert len(outcome(cleaner)) == 15_000
    assert os.listdir(run) == []


# ---- 3. random KeyboardInterrupts and EMFILE -----------------------------------------------

LIVE_REWRITER = """
args = json.loads(sys.argv[1])
paths, halt = args["paths"], args["stop"]
data = impl.PidRecord.current().encode()


def create(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)


for path in paths:
    create(path)
print("ready", flush=True)
# In place, as std::fs::write does, but without O_CREAT: a record that is not at its path (set
# aside, and not put back) is noticed, not silently written again.
missing, writes, lost, longest = {}, 0, 0, 0.0
while True:
    ending = os.path.exists(halt)
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        except FileNotFoundError:
            since = missing.setdefault(path, time.monotonic())
            if time.monotonic() - since > 3:
                lost += 1
                del missing[path]
                create(path)
            continue
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        writes += 1
        since = missing.pop(path, None)
        if since is not None:
            longest = max(longest, time.monotonic() - since)
    if ending and not missing:
        break
    if ending:
        time.sleep(0.001)
print(json.dumps({"writes": writes, "lost": lost, "longest_missing": longest}), flush=True)
sys.stdin.read()  # alive, its records whole, until the test lets go
"""

INTERRUPTED_CLEANER = """
import errno, random, resource, signal, traceback
import tokenize  # traceback's own lazy import (3.13): never while short of descriptors
from shimpid import _operate, _rundir
import shimpid
_rundir._backend = _operate._backend = impl
# The grace period is not what is raced here: short, so that runs are many and interrupts land
# all over clean(), not mostly in its wait for the grace period (signals held).
_rundir.GRACE = 0.001
args = json.loads(sys.argv[1])
run, rng = args["directory"], random.Random(args["seed"])
stale = impl.PidRecord(args["dead"], 1)
package = os.path.join(os.path.dirname(shimpid.__file__), "")


armed = False


def interrupt(signum, frame):
    # Only while clean() runs, and only in shimpid's code (at any depth below it).
    while armed and frame is not None:
        if frame.f_code.co_filename.startswith(package):
            raise KeyboardInterrupt
        frame = frame.f_back


def top_up():
    for i in range(args["stale"]):
        path = os.path.join(run, "stale-%d.pid" % i)
        if not os.path.exists(path):
            impl.PidFileWriter.at(path).write(stale)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def where(fd):
    try:
        return os.readlink("/proc/self/fd/" + fd)
    except OSError:
        return "?"


top_up()
shimpid.clean(run)  # its lazy imports, before descriptors run short
top_up()
signal.signal(signal.SIGALRM, interrupt)
fds_before = open_fds()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
counts = dict.fromkeys(
    ["runs", "finished", "interrupted", "emfile_raised", "removed", "kept_emfile", "kept"], 0
)
unexpected, strays, last = [], {}, None
mine = "%s%d." % (_rundir.ASIDE_PREFIX, os.getpid())
deadline = time.monotonic() + args["seconds"]
while time.monotonic() < deadline:
    top_up()
    # Short of descriptors only while clean runs (one it leaked must not starve the loop).
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(open_fds()) + args["spare"], hard))
    hog = []
    try:
        while True:
            hog.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    except OSError as err:
        if err.errno != errno.EMFILE:
            raise
    # A run in five is left alone, neither interrupted nor short of descriptors, so that some
    # finish and remove however slow this build is (ASan, coverage's tracing).
    calm = counts["runs"] % 5 == 4
    spare = 999 if calm else rng.choice((0, 1, 2, 3, 4, 5, 6, 8, 12, 999))
    for _ in range(min(len(hog), spare)):
        os.close(hog.pop())
    first = 0 if calm or not rng.randrange(5) else rng.uniform(0.00002, 0.004)
    again = rng.choice((0, 0, rng.uniform(0.00002, 0.0005)))  # a second interrupt, and more
    counts["runs"] += 1
    armed = True
    signal.setitimer(signal.ITIMER_REAL, first, again)
    try:
        try:
            done = shimpid.clean(run)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            armed = False
    except KeyboardInterrupt:
        counts["interrupted"] += 1
        last = traceback.format_exc()
    except OSError as err:
        if err.errno == errno.EMFILE:
            counts["emfile_raised"] += 1
        else:
            unexpected.append(traceback.format_exc())
    except BaseException:
        unexpected.append(traceback.format_exc())
    else:
        counts["finished"] += 1
        for removal in done:
            if removal.removed:
                counts["removed"] += 1
            elif "Too many open files" in removal.why:
                counts["kept_emfile"] += 1
            else:
                counts["kept"] += 1
    finally:
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for name in os.listdir(run):  # whatever happened, nothing of this clean's is left aside
        if name.startswith(mine) and name not in strays:
            with open(os.path.join(run, name), "rb") as f:
                # what it holds, and where the interrupts that left it came
                strays[name] = [f.read().decode("ascii", "replace"), str(last)[-1500:]]
print(json.dumps({
    "counts": counts,
    "unexpected": unexpected[:3],
    "unexpected_count": len(unexpected),
    "strays": strays,
    "leaked": sorted(map(where, open_fds() - fds_before)),
}))
"""


@pytest.mark.skipif(
    sys.implementation.name != "cpython",
    reason="PyPy runs signal handlers at other points than CPython (see the documentation)",
)
@pytest.mark.skipif(
    sys.version_info < (3, 11, 6),
    reason=(
        "CPython's own bug (gh-102890, gh-109613, fixed in 3.11.6): os.stat() and os.fstat() "
        "return with a raising handler's exception set (a debug build aborts)"
    ),
)
def test_interrupted_and_starved_cleaning_leaves_nothing_aside(impl, tmp_path, reaped_pid):
    """clean() loops over a directory of stale pid files and live ones rewritten in place by
    another process, interrupted at random points (once, or again and again, so that an interrupt
    lands while files are being put back) by KeyboardInterrupt, and short of descriptors at
    random. It raises nothing but KeyboardInterrupt (and EMFILE opening the directory itself),
    leaves no file aside and no descriptor open, and no live record goes missing."""
    run = tmp_path / "run"
    run.mkdir()
    halt = tmp_path / "stop"
    seed = random.randrange(2**32)
    lives = [str(run / f"live-{i}.pid") for i in range(4)]
    rewriter = spawn(impl, LIVE_REWRITER, paths=lives, stop=str(halt))
    try:
        assert rewriter.stdout.readline() == "ready\n", rewriter.stderr.read()
        chaos = spawn(
            impl,
            INTERRUPTED_CLEANER,
            directory=str(run),
            dead=reaped_pid,
            seed=seed,
            stale=24,
            spare=40,
            seconds=rounds(1.0, 8.0),
        )
        result = outcome(chaos)
        halt.touch()
        rewritten = json.loads(rewriter.stdout.readline())
        verdicts = [shimpid.PidFileReader.at(path).process_identity() for path in lives]
    finally:
        stop(rewriter)
    counts = result["counts"]
    strays = result.pop("strays")
    summary = f"seed {seed}: {result}, rewriter {rewritten}"
    print(f"\n{impl.BACKEND}: {summary}, {len(strays)} files left aside")
    problems = []
    if result["unexpected_count"]:
        problems.append(
            f"clean raised {result['unexpected_count']} times what it should not, first:\n"
            + "\n".join(result["unexpected"])
        )
    if strays:
        name, (content, where) = sorted(strays.items())[0]
        problems.append(
            f"{len(strays)} files left aside, {name} holding {content!r} after:\n{where}"
        )
    if aside_files(run):
        problems.append(f"files aside at the end: {aside_files(run)}")
    if result["leaked"]:
        problems.append(f"descriptors left open: {result['leaked']}")
    if rewritten["lost"]:
        problems.append(f"{rewritten['lost']} live records went missing for over 3 s")
    if verdicts != [shimpid.Verified(rewriter.pid)] * len(lives):
        problems.append(f"the live records read {verdicts} at the end")
    assert problems == [], f"{summary}\n\n" + "\n\n".join(problems)
    # the storm was real: interrupted, short of descriptors, and removing all the same
    assert counts["interrupted"] and counts["removed"], summary
    assert counts["kept_emfile"] + counts["emfile_raised"], summary
