"""The operator layer as root, against another local user who plants symlinks and swaps
directories: every command opens its directory once, acts relative to that descriptor, and (as
root, without --insecure) reaches it only through components nobody else could have placed.

Each scenario runs whole in a pid namespace (``run_in_pid_namespace``): it signals processes, and
a mistake must harm only its own. The other user is ``other_user``, made for the session; its
actions are those of a forked child that took its uid and gid.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile

import pytest

import shimpid
from _helpers import rounds, run_in_pid_namespace, script_prelude

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to be somebody else)")

# ---- what every namespaced script has ------------------------------------------------------------

COMMON = r'''
import contextlib, ctypes, io, signal, struct
import shimpid
from shimpid import _cli, _lock, _operate, _rundir

for _module in (_cli, _lock, _operate, _rundir):
    _module._backend = impl
P = json.loads(PARAMS)
UID, GID = P["uid"], P["gid"]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), SHIMPID_PURE_PYTHON=P["pure"])
out = {}


def cli(*argv):
    """The command line in this process, with impl's backend: [code, stdout, stderr]."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = _cli.main([str(arg) for arg in argv])
        except SystemExit as exit:
            code = exit.code
    return [code, stdout.getvalue(), stderr.getvalue().strip()]


def cli_fresh(*argv):
    """The real entry point, python -m shimpid: [code, stdout, stderr]."""
    done = subprocess.run([sys.executable, "-m", "shimpid", *map(str, argv)], env=ENV,
                          capture_output=True, text=True, timeout=60)
    return [done.returncode, done.stdout, done.stderr.strip()]


def refusal(fn):
    """[component, why] of the UntrustedPath fn() raises, or what it did instead."""
    try:
        result = fn()
    except _rundir.UntrustedPath as err:
        return [err.filename, err.why]
    if isinstance(result, int):
        os.close(result)  # a directory descriptor: open_directory went through
    return ["acted", repr(result)]


def become_other():
    os.setgroups([])
    os.setgid(GID)
    os.setuid(UID)


def as_other(fn):
    """fn(), run by the other user in a forked child."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            become_other()
            fn()
            os.write(w, b"ok")
        except BaseException as err:
            os.write(w, repr(err).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read()
    os.waitpid(child, 0)
    if said != b"ok":
        raise RuntimeError(f"as the other user: {said!r}")


def content(path):
    """The file's bytes, or None where it is gone."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def stale_record():
    """A record of a process that has exited and been reaped: clean removes it wherever it is."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    return impl.PidRecord(dead.pid, 1).encode()
'''


def namespaced(impl, body: str, **params) -> dict:
    """Run ``body`` (after COMMON, with ``P`` = params) as pid 1 of a new pid namespace; the
    JSON it prints as ``out``."""
    params["pure"] = "1" if impl is shimpid._pure else "0"
    script = (
        script_prelude(impl)
        + f"PARAMS = {json.dumps(params)!r}\n"
        + COMMON
        + body
        + "\nprint(json.dumps(out))\n"
    )
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def base(shared_dir):
    """A root-owned 0755 directory in /dev/shm, its real path (the trust walk shows the path it
    walked, after any symlink on the way), removed after the test."""
    return os.path.realpath(shared_dir)


def refused(command: str, component: str, why: str) -> str:
    return f"shimpid: {command}: not trusting {component}: {why} (--insecure to act anyway)"


# ---- 1. the symlink swap during a long clean -----------------------------------------------------

SWAP = r'''
parent, other, count = P["parent"], P["other"], P["count"]
run = os.path.join(parent, "run")
real = run + ".real"
STALE = stale_record()

# OTHER: what the attacker points PARENT/run at. Clean would remove the sentinel (a stale record)
# and, with --pattern '*', app.conf; the FIFO must never be opened: a writer is blocked on it.
sentinel, conf, fifo = (
    os.path.join(other, name) for name in ("zz-important.pid", "app.conf", "zz-fifo.pid")
)
with open(sentinel, "wb") as f:
    f.write(STALE)
with open(conf, "wb") as f:
    f.write(b"# any pattern matching me is a mistake\nlisten = 8080\n")
os.mkfifo(fifo, 0o644)
blocked = subprocess.Popen(["sh", "-c", 'echo ready; : > "$1"; echo opened', "sh", fifo],
                           stdout=subprocess.PIPE, text=True)
assert blocked.stdout.readline() == "ready\n"


def waiting_on_fifo():
    with open(f"/proc/{blocked.pid}/wchan") as f:
        wchan = f.read().strip()
    with open(f"/proc/{blocked.pid}/stat", "rb") as f:
        state = f.read().rpartition(b")")[2].split()[0]
    return wchan == "wait_for_partner" or (wchan in ("", "0") and state == b"S")


deadline = time.monotonic() + 10
while not waiting_on_fifo():
    assert time.monotonic() < deadline, "the FIFO's writer never blocked"
    time.sleep(0.001)

# Every event in OTHER (an open, a read, a rename, a removal...), from here on.
libc = ctypes.CDLL(None, use_errno=True)
watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
if watch < 0 or libc.inotify_add_watch(watch, os.fsencode(other), 0xFFF) < 0:  # IN_ALL_EVENTS
    raise OSError(ctypes.get_errno(), "inotify")


def events():
    seen = []
    while True:
        try:
            data = os.read(watch, 65536)
        except BlockingIOError:
            return seen
        at = 0
        while at < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, at)
            seen.append([hex(mask), os.fsdecode(data[at + 16 : at + 16 + length].rstrip(b"\0"))])
            at += 16 + length


def snapshot(directory):
    """Each entry's inode, type, size and times (a rename aside and back changes the ctime, a
    read the atime), from lstat: nothing opened."""
    shot = {}
    for name in sorted(os.listdir(directory)):
        i = os.lstat(os.path.join(directory, name))
        shot[name] = [i.st_ino, i.st_mode, i.st_size, i.st_mtime_ns, i.st_ctime_ns, i.st_atime_ns]
    events()  # listing OTHER opened it: not clean's doing
    return shot


def populate():
    names = [f"svc{i:05d}.pid" for i in range(count)]
    for name in names:
        with open(os.path.join(run, name), "wb") as f:
            f.write(STALE)
    return names


class Attacker:
    """The other user, swapping PARENT/run for a symlink to OTHER and back as fast as it can,
    from start() until stop() (which leaves PARENT/run the real directory again)."""

    def __init__(self):
        go_r, self.go = os.pipe()
        self.report, report_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(self.go)
                os.close(self.report)
                become_other()
                stopping = []
                signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
                os.read(go_r, 1)
                swaps = 0
                while not stopping:
                    os.rename(run, real)
                    os.symlink(other, run)
                    swaps += 1
                    if swaps == 1:
                        os.write(report_w, b"+")
                    os.unlink(run)
                    os.rename(real, run)
                os.write(report_w, b"%d" % swaps)
            except BaseException as err:
                os.write(report_w, repr(err).encode())
                code = 70
            os._exit(code)
        os.close(go_r)
        os.close(report_w)

    def start(self):
        """Let it go, and return once it has put its symlink in place once."""
        os.write(self.go, b"g")
        first = os.read(self.report, 1)
        if first != b"+":
            raise RuntimeError(f"the attacker failed: {first + os.read(self.report, 4096)!r}")

    def stop(self):
        """Its swaps; it is gone, whatever happens."""
        try:
            os.kill(self.pid, signal.SIGTERM)
            said = b""
            while chunk := os.read(self.report, 4096):
                said += chunk
        finally:
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            os.close(self.report)
            os.close(self.go)
        if not said.isdigit():
            raise RuntimeError(f"the attacker failed: {said!r}")
        return int(said)


try:
    os.chown(parent, UID, GID)  # the other user's directory: it may rename and replace entries
    directory = os.stat(run)
    names = populate()
    before = snapshot(other)

    # (a) without --insecure, root refuses PARENT itself, while the attacker swaps
    attacker = Attacker()
    try:
        attacker.start()
        untrusted = {
            "clean": cli("clean", run),
            "clean *": cli("clean", "--pattern", "*", run),
            "clean fresh": cli_fresh("clean", run),
            "ls": cli("ls", run),
            "status": cli("status", os.path.join(run, names[0])),
            "api clean": refusal(lambda: shimpid.clean(run)),
            "api clean *": refusal(lambda: shimpid.clean(run, pattern="*", secure=True)),
            "api open": refusal(lambda: _rundir.open_directory(run)),
        }
    finally:
        swaps = attacker.stop()
    out["untrusted"] = untrusted
    out["untrusted after"] = {
        "swaps": swaps,
        "dir kept everything": sorted(os.listdir(run)) == names,
        "other events": events(),
        "other unchanged": snapshot(other) == before,
    }

    # ... and a root-owned PARENT that anyone may write to (no attacker here: caught half-way, the
    # swap leaves no PARENT/run to refuse, see test 4)
    os.chown(parent, 0, 0)
    os.chmod(parent, 0o777)
    out["world-writable"] = [cli("clean", run), refusal(lambda: _rundir.open_directory(run))]
    os.chmod(parent, 0o755)
    os.chown(parent, UID, GID)
    out["world-writable after"] = sorted(os.listdir(run)) == names

    # (b) --insecure (and secure=False): the directory opened once is the one cleaned, whatever
    # PARENT/run is meanwhile. The attacker starts only once it is open (before, --insecure
    # follows the symlink, as told), and has swapped once before clean lists it.
    impl.PidFileWriter.at(os.path.join(run, "live.pid")).write_for(blocked.pid)  # kept
    real_open = _rundir.open_directory
    insecure = {}
    for label, clean_it in [
        ("api", lambda: shimpid.clean(run, secure=False)),
        ("cli", lambda: cli("clean", "--insecure", run)),
        ("cli *", lambda: cli("clean", "--insecure", "--pattern", "*", run)),
    ]:
        if label != "api":
            names = populate()
        expected = sorted(os.path.join(run, name) for name in names)
        attacker = Attacker()
        opened = []

        def gated(path, *, secure=None):
            fd = real_open(path, secure=secure)
            info = os.fstat(fd)
            opened.append([info.st_ino, info.st_dev])
            attacker.start()
            return fd

        _rundir.open_directory = gated
        try:
            began = time.monotonic()
            result = clean_it()
            took = time.monotonic() - began
        finally:
            _rundir.open_directory = real_open
            swaps = attacker.stop()
        if label == "api":
            code, removed = 0, [r.path for r in result if r.removed]
            other_lines = [repr(r) for r in result if not r.removed]
        else:
            code, stdout, stderr = result
            lines = stdout.splitlines()
            removed = [line[len("removed ") :].partition(": ")[0] for line in lines
                       if line.startswith("removed ")]
            other_lines = [line for line in lines if not line.startswith("removed ")]
            other_lines += stderr.splitlines()
        insecure[label] = {
            "code": code,
            "removed what it should": removed == expected,
            "removed elsewhere": [path for path in removed if path not in expected][:5],
            "other lines": other_lines[:5],
            "opened DIR": opened == [[directory.st_ino, directory.st_dev]],
            "swaps": swaps,
            "took": took,
            "other events": events(),
            "other unchanged": snapshot(other) == before,
            "dir left": sorted(os.listdir(run)),
            "dir is DIR": os.lstat(run).st_ino == directory.st_ino,
            "parent": sorted(os.listdir(parent)),
            "fifo writer blocked": blocked.poll() is None and waiting_on_fifo(),
        }
    out["insecure"] = insecure
    out["end"] = {
        "sentinel": content(sentinel) == STALE,
        "conf": os.path.exists(conf),
        "fifo writer blocked": blocked.poll() is None and waiting_on_fifo(),
    }
finally:
    blocked.kill()
    out["fifo writer said"] = blocked.stdout.read()
    blocked.wait()
    blocked.stdout.close()
'''


@needs_root
def test_a_symlink_swapped_in_during_a_long_clean_reaches_nothing(impl, base, other_user):
    uid, gid = other_user
    parent, other = os.path.join(base, "parent"), os.path.join(base, "other")
    run = os.path.join(parent, "run")
    for path in (parent, run, other):
        os.mkdir(path, 0o755)
    out = namespaced(
        impl, SWAP, uid=uid, gid=gid, parent=parent, other=other, count=rounds(3000, 20000)
    )

    why = f"a directory owned by uid {uid}, not by this user or root"
    untrusted = out["untrusted"]
    for key in ("clean", "clean *", "clean fresh", "ls", "status"):
        command = key.split()[0]
        assert untrusted[key] == [4, "", refused(command, parent, why)], key
    for key in ("api clean", "api clean *", "api open"):
        assert untrusted[key] == [parent, why], key
    after = out["untrusted after"]
    assert after["swaps"] >= 1
    assert after["dir kept everything"] and after["other unchanged"]
    assert after["other events"] == []

    open_to_all = "it is in a directory that other users can write to"
    assert out["world-writable"] == [
        [4, "", refused("clean", run, open_to_all)],
        [run, open_to_all],
    ]
    assert out["world-writable after"]

    for label, seen in out["insecure"].items():
        assert seen["opened DIR"], label
        assert seen["swaps"] >= 1, label
        assert seen["other events"] == [], (label, "something in OTHER was touched")
        assert seen["other unchanged"], label
        assert seen["removed elsewhere"] == [] and seen["removed what it should"], (label, seen)
        assert seen["other lines"] == [] and seen["code"] == 0, (label, seen)
        assert seen["dir left"] == ["live.pid"] and seen["dir is DIR"], label
        assert seen["parent"] == ["run"], label
        assert seen["fifo writer blocked"], label
    assert out["end"] == {"sentinel": True, "conf": True, "fifo writer blocked": True}
    assert out["fifo writer said"] == "", "the FIFO was opened for reading"


# ---- 2. planted symlinks against stop, signal, pid, status, ls and clean -------------------------

PLANTED = r"""
base = P["base"]
svc, sticky, gsticky = (os.path.join(base, n) for n in ("svc", "sticky", "group-sticky"))
os.mkdir(svc, 0o755)
os.mkdir(sticky)
os.chmod(sticky, 0o1777)
os.mkdir(gsticky)
os.chown(gsticky, 0, GID)
os.chmod(gsticky, 0o1775)
pidfile, stale = os.path.join(svc, "app.pid"), os.path.join(svc, "old.pid")
with open(stale, "wb") as f:
    f.write(stale_record())  # what clean would remove, were it led into SVC
daemon = subprocess.Popen(["sleep", "60"])  # root's service
try:
    impl.PidFileWriter.at(pidfile).write_for(daemon.pid)
    record, old = content(pidfile), content(stale)

    def intact():
        return [daemon.poll() is None, content(pidfile) == record, content(stale) == old]

    # The other user's symlinks, where it may create entries; and root's own symlink whose
    # target goes through theirs.
    theirs = [os.path.join(sticky, "app"), os.path.join(gsticky, "app")]
    for link in theirs:
        as_other(lambda: os.symlink(svc, link))
    os.symlink(theirs[0], os.path.join(sticky, "chain"))
    out["owners"] = [os.lstat(p).st_uid for p in [*theirs, os.path.join(sticky, "chain")]]

    untrusted = {}
    for link in [*theirs, os.path.join(sticky, "chain")]:
        file = os.path.join(link, "app.pid")
        for command, argv in [
            ("stop", ["stop", "--timeout", "5", file]),
            ("signal", ["signal", file, "TERM"]),
            ("pid", ["pid", file]),
            ("status", ["status", file]),
            ("clean", ["clean", link]),
            ("clean", ["clean", "--pattern", "*", link]),
            ("ls", ["ls", link]),
        ]:
            untrusted[" ".join(argv)] = [link, command, *cli(*argv), *intact()]
        for label, fn in [
            ("api stop", lambda: _operate.stop(file, timeout=5)),
            ("api signal", lambda: _operate.send_signal(file, signal.SIGTERM)),
            ("api clean", lambda: shimpid.clean(link)),
            ("api open", lambda: _rundir.open_directory(link, secure=True)),
        ]:
            untrusted[f"{label} {link}"] = [link, label, refusal(fn), *intact()]
    file = os.path.join(theirs[0], "app.pid")
    untrusted["fresh stop"] = [theirs[0], "stop", *cli_fresh("stop", "--timeout", "5", file),
                               *intact()]
    out["untrusted"] = untrusted

    # --insecure: stop acts through their symlink
    code, said, complaint = cli("stop", "--insecure", "--timeout", "5", file)
    out["insecure"] = [code, complaint, daemon.wait(5), os.path.exists(pidfile)]

    # root's own symlinks in the sticky directories are followed
    daemon = subprocess.Popen(["sleep", "60"])
    impl.PidFileWriter.at(pidfile).write_for(daemon.pid)
    mine = [os.path.join(sticky, "mine"), os.path.join(gsticky, "mine")]
    for link in mine:
        os.symlink(svc, link)
    out["root's"] = {
        "status": cli("status", os.path.join(mine[1], "app.pid"))[0],
        "pid": cli("pid", os.path.join(mine[1], "app.pid")),
        "clean": cli("clean", mine[0]) + [os.path.exists(stale), os.path.exists(pidfile)],
        "stop": cli("stop", "--timeout", "5", os.path.join(mine[0], "app.pid"))
        + [daemon.wait(5), os.path.exists(pidfile)],
    }
    out["daemon"] = daemon.pid
finally:
    daemon.kill()
    daemon.wait()
"""


@needs_root
def test_planted_symlinks_lead_root_nowhere(impl, base, other_user):
    uid, gid = other_user
    out = namespaced(impl, PLANTED, uid=uid, gid=gid, base=base)
    sticky = os.path.join(base, "sticky")
    assert out["owners"] == [uid, uid, 0]

    why = f"a symlink owned by uid {uid}, not by this user or root"
    chain = os.path.join(sticky, "chain")
    for label, (link, command, *seen) in out["untrusted"].items():
        component = os.path.join(sticky, "app") if link == chain else link  # theirs, on the way
        if label.startswith("api "):
            assert seen == [[component, why], True, True, True], label
        else:
            assert seen == [4, "", refused(command, component, why), True, True, True], label
    assert len(out["untrusted"]) == 3 * (7 + 4) + 1

    assert out["insecure"] == [0, "", -15, False], "--insecure follows their symlink, as told"
    mine = os.path.join(sticky, "mine")
    root_s = out["root's"]
    assert root_s["status"] == 0
    assert root_s["pid"] == [0, f"{out['daemon']}\n", ""]
    code, said, complaint, stale_left, record_left = root_s["clean"]
    assert (code, complaint, stale_left, record_left) == (0, "", False, True)
    assert said.startswith(f"removed {mine}/old.pid: pid file: process ")
    assert said.count("\n") == 1
    assert root_s["stop"] == [
        0,
        f"stopped {out['daemon']}, removed {mine}/app.pid\n",
        "",
        -15,
        False,
    ]


# ---- 3. root's own directory in a sticky world-writable one is trusted ---------------------------

ROOTDIR = r"""
out["places"] = {}
for rootdir in P["rootdirs"]:
    pidfile, stale = os.path.join(rootdir, "app.pid"), os.path.join(rootdir, "old.pid")
    with open(stale, "wb") as f:
        f.write(stale_record())
    daemon = subprocess.Popen(["sleep", "60"])
    try:
        impl.PidFileWriter.at(pidfile).write_for(daemon.pid)
        out["places"][rootdir] = {
            "daemon": daemon.pid,
            "open": refusal(lambda: _rundir.open_directory(rootdir, secure=True))[0],
            "status": cli("status", pidfile)[0],
            "pid": cli("pid", pidfile),
            "signal": cli("signal", pidfile, "CONT"),
            "ls": cli("ls", rootdir)[0],
            "clean": cli("clean", rootdir)[0:3:2] + [os.path.exists(stale)],
            "stop": cli("stop", "--timeout", "5", pidfile) + [daemon.wait(5)],
            "left": sorted(os.listdir(rootdir)),
        }
    finally:
        daemon.kill()
        daemon.wait()
"""


@needs_root
def test_a_root_directory_in_a_sticky_world_writable_one_is_trusted(impl, base):
    sticky = os.path.join(base, "sticky")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    rootdirs = [os.path.join(sticky, "rootdir")]
    os.mkdir(rootdirs[0], 0o755)
    tmp = os.path.realpath(tempfile.gettempdir())
    info = os.stat(tmp)
    in_tmp = None
    if info.st_uid == 0 and info.st_mode & stat.S_ISVTX:  # the real thing, where /tmp is it
        in_tmp = tempfile.mkdtemp(prefix="shimpid-", dir=tmp)
        os.chmod(in_tmp, 0o755)
        rootdirs.append(in_tmp)
    try:
        out = namespaced(impl, ROOTDIR, uid=0, gid=0, rootdirs=rootdirs)
    finally:
        if in_tmp is not None:
            shutil.rmtree(in_tmp, ignore_errors=True)
    assert list(out["places"]) == rootdirs
    for rootdir, seen in out["places"].items():
        pid = seen["daemon"]
        assert seen["open"] == "acted", rootdir
        assert seen["status"] == 0 and seen["ls"] == 0, rootdir
        assert seen["pid"] == [0, f"{pid}\n", ""], rootdir
        assert seen["signal"] == [0, f"sent SIGCONT to {pid}\n", ""], rootdir
        assert seen["clean"] == [0, "", False], rootdir
        assert seen["stop"] == [0, f"stopped {pid}, removed {rootdir}/app.pid\n", "", -15], rootdir
        assert seen["left"] == [], rootdir


PLANTED_RECORD = r"""
victim = subprocess.Popen(["sleep", "600"])  # root's, and none of the spawner's
sticky, open_dir = P["sticky"], P["open"]
for directory in (sticky, open_dir):
    own = shimpid.spawn(["sleep", "600"], os.path.join(directory, "box-1.pid"))
record = impl.PidRecord(victim.pid, impl.process_start_time(victim.pid)).encode()
def plant():  # a file of the other user's, naming root's process with its right start time
    for directory in (sticky, open_dir):
        with open(os.path.join(directory, "box-2.pid"), "wb") as f:
            f.write(record)
as_other(plant)
out["places"] = {}
for directory in (sticky, open_dir):
    seen = out["places"][directory] = {}
    for entry in shimpid.scan(directory):  # the recovery loop of the guide
        name = os.path.basename(entry.path)
        seen[name] = [type(entry.verdict).__name__, entry.untrusted, refusal(entry.open_process)]
    reader = shimpid.PidFileReader.at(os.path.join(directory, "box-2.pid"))
    seen["reader"] = refusal(reader.open_process)
    with reader.open_process(secure=False) as handle:  # (told to: it opens)
        seen["insecure"] = handle.pid == victim.pid
    seen["cli"] = cli("stop", os.path.join(directory, "box-2.pid"))[0]
out["victim"] = victim.poll()
"""


@needs_root
def test_a_record_another_user_planted_opens_no_handle(impl, base, other_user):
    """A recovery loop as root (scan(), open_process(), terminate()) in a sticky directory, where
    any user may put files beside the spawner's: a record another user wrote, naming a process
    of root's with its right start time, is Verified (it names that process) but opens no
    handle, from a scan or a reader, as ``shimpid stop`` refuses it. In a world-writable
    directory that is not sticky, not even root's own record does (anyone could replace it)."""
    uid, gid = other_user
    sticky, open_dir = os.path.join(base, "sticky"), os.path.join(base, "open")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    out = namespaced(impl, PLANTED_RECORD, uid=uid, gid=gid, sticky=sticky, open=open_dir)
    owned = f"it is owned by uid {uid}, not by this user or root"
    writable = "it is in a directory that other users can write to"
    seen = out["places"][sticky]
    assert seen["box-1.pid"][:2] == ["Verified", None]
    assert seen["box-1.pid"][2][0] == "acted"
    assert seen["box-2.pid"] == ["Verified", owned, [sticky + "/box-2.pid", owned]]
    assert seen["reader"] == [sticky + "/box-2.pid", owned]
    seen = out["places"][open_dir]
    assert seen["box-1.pid"] == ["Verified", writable, [open_dir + "/box-1.pid", writable]]
    assert seen["box-2.pid"][1] == owned and seen["box-2.pid"][2][1] == owned
    assert seen["reader"] == [open_dir + "/box-2.pid", owned]
    for place in (sticky, open_dir):
        assert out["places"][place]["insecure"] is True
        assert out["places"][place]["cli"] == 4, "shimpid stop refuses it too"
    assert out["victim"] is None, "root's process was never signalled"


# ---- 4. a component missing from a directory others can write to ---------------------------------


@needs_root
def test_a_missing_component_of_a_world_writable_directory_is_refused_all_the_same(cli, base):
    parent = os.path.join(base, "parent")
    os.mkdir(parent)
    os.chmod(parent, 0o777)  # root's, but anyone may rename or remove what is in it
    run = os.path.join(parent, "run")  # moved away by someone: not there now
    file = os.path.join(run, "app.pid")
    why = "it is in a directory that other users can write to"
    seen = {
        command: cli(*argv)
        for command, argv in [
            ("stop", ["stop", file]),
            ("status", ["status", file]),
            ("pid", ["pid", file]),
            ("clean", ["clean", run]),
        ]
    }
    assert seen == {command: (4, "", refused(command, run, why) + "\n") for command in seen}
