"""Atomic writes: all or nothing, no temporary left behind, ordinary permissions."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mentoring.io import atomic_path, write_json


def test_write_json_is_readable_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "m.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_written_files_follow_the_umask_not_0600(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json(target, {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_temporary_keeps_the_extension(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"x")


def _write_check(volume: Path, user: int | None, group: int | None) -> subprocess.CompletedProcess:
    """`writable_dir(<volume>/run-1/data)` in a child process that drops to ``user``:``group``
    after its imports (the interpreter lives under root's home, which other users cannot read)."""
    code = (
        "import os, sys; from mentoring.io import writable_dir\n"
        "if sys.argv[2] != 'None':\n"
        "    os.setgroups([]); os.setgid(int(sys.argv[3])); os.setuid(int(sys.argv[2]))\n"
        "writable_dir(sys.argv[1])"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(volume / "run-1" / "data"), str(user), str(group)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_volume_this_user_cannot_write_is_named_with_its_owner_and_the_fix() -> None:
    """A fresh volume whose root belongs to root (0755): a non-root process fails at once with
    who owns it, its mode, the process's ids and what the cluster must provide; the same root
    writable by group 0 (the images' user is in group 0) lets any uid of group 0 write."""
    volume = Path(tempfile.mkdtemp(prefix="volume-", dir="/tmp"))  # reachable by any user
    try:
        if os.geteuid() == 0:  # as the tests run here and in CI: a real other user
            volume.chmod(0o755)
            res = _write_check(volume, 10001, 0)
            assert res.returncode != 0
            assert f"{volume}: not writable by this process (uid 10001, gid 0" in res.stderr
            assert "owned by 0:0, mode 0755" in res.stderr and "fsGroup" in res.stderr
            os.chown(volume, 0, 0)
            volume.chmod(0o2775)  # root:root, group-writable (OpenShift-style storage)
            for uid in (10001, 123456):  # the image's user, an arbitrary one in group 0
                shutil.rmtree(volume / "run-1", ignore_errors=True)
                res = _write_check(volume, uid, 0)
                assert res.returncode == 0, res.stderr
                assert (volume / "run-1" / "data").stat().st_uid == uid
        else:  # a folder this user owns but made read-only
            volume.chmod(0o555)
            res = _write_check(volume, None, None)
            assert res.returncode != 0 and "mode 0555" in res.stderr, res.stderr
    finally:
        volume.chmod(0o755)
        shutil.rmtree(volume)
