"""A whole run directory at once: shimpid.scan() and ``shimpid ls``, on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import shimpid
from _helpers import run_in_child
from shimpid import Absent, Legacy, Verified, _common, _operate, _rundir

TOKEN = "services-mux-v1"


@pytest.fixture
def scanning(impl, monkeypatch):
    """shimpid.scan() with ``impl``'s per-file verdict."""
    monkeypatch.setattr(_rundir, "_backend", impl)
    monkeypatch.setattr(_operate, "_backend", impl)
    return shimpid.scan


@pytest.fixture
def run_dir(impl, tmp_path, sleeper, reaped_pid):
    """Every kind of thing a run directory holds."""
    impl.PidFileWriter.at(tmp_path / "live.pid", capability=TOKEN).write_for(sleeper.pid)
    impl.PidFileWriter.at(tmp_path / "legacy.pid").write(impl.PidRecord(sleeper.pid))
    impl.PidFileWriter.at(tmp_path / "dead.pid").write(impl.PidRecord(reaped_pid, 1))
    (tmp_path / "garbage.pid").write_bytes(b"garbage\n")
    (tmp_path / "empty.pid").write_bytes(b"")
    (tmp_path / "big.pid").write_bytes(b"1\n".ljust(5000, b" "))
    (tmp_path / "notes.txt").write_bytes(b"%d\n" % sleeper.pid)
    (tmp_path / "link.pid").symlink_to(tmp_path / "live.pid")  # never followed
    (tmp_path / "dir.pid").mkdir()
    os.mkfifo(tmp_path / "fifo.pid")  # never opened
    (tmp_path / f".live.pid.{sleeper.pid}.0.tmp").write_bytes(b"")  # a writer's, skipped
    (tmp_path / f"{_rundir.ASIDE_PREFIX}1.2").write_bytes(b"")
    return tmp_path


def test_scan_gives_each_pid_file_its_verdict(scanning, run_dir, sleeper):
    found = dict(scanning(run_dir))
    assert found == {
        str(run_dir / "live.pid"): Verified(sleeper.pid),
        str(run_dir / "legacy.pid"): Legacy(sleeper.pid),
        str(run_dir / "dead.pid"): Absent(),
        str(run_dir / "garbage.pid"): Absent(),
        str(run_dir / "empty.pid"): Absent(),
        str(run_dir / "big.pid"): Absent(),
    }
    assert dict(scanning(run_dir, pattern="*.txt")) == {
        str(run_dir / "notes.txt"): Legacy(sleeper.pid)
    }
    assert set(dict(scanning(run_dir, pattern="[ld]*.pid"))) == {
        str(run_dir / name) for name in ("live.pid", "legacy.pid", "dead.pid")
    }


def test_scan_agrees_with_each_reader(impl, scanning, run_dir):
    for path, verdict in scanning(run_dir):
        assert verdict == shimpid.PidFileReader.at(path).process_identity()


def test_every_pattern_and_backend_gives_the_same_entries(impl, run_dir, monkeypatch):
    """What ls shows (record, extras, lock, bytes) is the pure rules' whichever way it is read:
    the extension's fast path for "*.pid", or the general one. A file larger than a pid file
    may be holds none: no bytes, no lock, no record."""
    with open(run_dir / "legacy.pid") as held:
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX)  # a flock(): locked, its holder unnamed

        def entries(backend, pattern):
            monkeypatch.setattr(_rundir, "_backend", backend)
            found = shimpid.scan(run_dir, pattern=pattern, locks=True)
            return {
                e.path: (e.verdict, e.data, e.lock, e.record and e.record.encode(), e.extras)
                for e in found
            }

        expected = entries(shimpid._pure, "*.p[i]d")
        for pattern in ("*.pid", "*.p[i]d"):
            assert entries(impl, pattern) == expected, pattern
    assert expected[str(run_dir / "big.pid")] == (Absent(), None, None, None, _common.NO_EXTRAS)
    live = os.stat(run_dir / "live.pid")
    assert expected[str(run_dir / "live.pid")][2] == (False, None, (live.st_dev, live.st_ino))
    assert expected[str(run_dir / "legacy.pid")][2][:2] == (True, None)


def test_scan_reports_what_it_cannot_read_and_goes_on(impl, scanning, shared_dir, sleeper):
    if os.geteuid() != 0:
        pytest.skip("needs root to be somebody else")
    impl.PidFileWriter.at(os.path.join(shared_dir, "a.pid")).write_for(sleeper.pid)
    impl.PidFileWriter.at(os.path.join(shared_dir, "secret.pid"), mode=0o600).write_for(sleeper.pid)

    def child(out):
        os.setuid(65534)
        os.write(
            out,
            json.dumps(
                {
                    os.path.basename(p): [repr(v), getattr(v, "filename", p)]
                    for p, v in scanning(shared_dir)
                }
            ).encode(),
        )

    code, said = run_in_child(child)
    assert code == 0, said
    found = json.loads(said)
    assert found["a.pid"][0] == repr(Verified(sleeper.pid))
    assert found["secret.pid"][0].startswith("StorageError(13,")  # the OSError, not a verdict
    assert found["secret.pid"][1] == os.path.join(shared_dir, "secret.pid")  # names the file


def test_scan_of_a_missing_directory_raises(scanning, tmp_path):
    with pytest.raises(FileNotFoundError):
        list(scanning(tmp_path / "missing"))


def test_ls(impl, run_dir, sleeper, reaped_pid):
    env = dict(os.environ, SHIMPID_PURE_PYTHON="1" if impl is shimpid._pure else "0")
    out = subprocess.run(
        [sys.executable, "-m", "shimpid", "ls", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(__file__),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "PATH",
        "PID",
        "STATE",
        "LOCKED",
        "BY",
        "STARTED",
        "AGE",
        "CAPABILITY",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert list(rows) == sorted(rows), "sorted by path"
    live = rows[str(run_dir / "live.pid")]
    assert live[1:4] == [str(sleeper.pid), "verified", "-"] and live[-1] == TOKEN
    assert rows[str(run_dir / "legacy.pid")][1:4] == [str(sleeper.pid), "legacy", "-"]
    assert rows[str(run_dir / "garbage.pid")][1:4] == ["-", "absent", "-"]
    assert lines[-1] == "6 pid files: 1 verified, 1 legacy, 4 absent"
    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "shimpid", "ls", "--json", str(run_dir)],
            env=env,
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
        ).stdout
    )
    assert report["summary"] == {"verified": 1, "legacy": 1, "absent": 4, "unknown": 0}
    live = next(row for row in report["files"] if row["path"].endswith("/live.pid"))
    assert live["pid"] == sleeper.pid and live["capability"] == TOKEN
    assert 0 <= live["age"] < 600 and live["started"].count(":") == 2
    missing = subprocess.run(
        [sys.executable, "-m", "shimpid", "ls", str(run_dir / "nope")],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(__file__),
    )
    assert missing.returncode == 1 and "No such file" in missing.stderr
