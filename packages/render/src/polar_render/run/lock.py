"""One run per output directory: an advisory ``flock`` on ``OUT/.lock`` for a whole run.

* An unsharded run holds ``OUT/.lock`` exclusively: a second run into the same OUT (sharded
  or not) is refused at once with :class:`RunLockedError`, naming who holds it.
* A sharded run (``--shard k/n``, e.g. one Slurm array task) holds ``OUT/.lock`` shared, so
  the shards of one run render side by side, and ``OUT/.lock-shard-k-of-n`` exclusively, so
  the same shard cannot run twice. An unsharded run refuses while any shard runs.
* Worker processes and Ray tasks of a run (``RenderRequest.worker``) take no lock: their
  parent holds it for them.

Each holder also writes ``OUT/.lock-holder-<host>--<pid>--<all|shard-k-of-n>`` (JSON: pid, host, shard,
start time) for the refusal message; it is removed on release, and entries of dead
processes on this host are ignored and cleaned. The kernel drops a ``flock`` when its
process ends, however it ends, so a killed run never leaves OUT locked. The lock files
themselves stay (removing a lock file that another process is about to lock would let
two runs hold different files). ``flock`` works across processes of one host and, on
Linux NFS clients, across hosts (emulated with POSIX locks).
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from polar_render import io

LOCK_NAME = ".lock"
HOLDER_PREFIX = ".lock-holder-"
_HOST = io._HOST   # the same host tag as io's temporary directories


class RunLockedError(ValueError):
    """Another run holds the output directory (the CLI exits 2)."""


def holders(out: Path) -> list[dict]:
    """Live holders recorded in ``out`` (stale records of dead processes are removed)."""
    found = []
    for p in sorted(Path(out).glob(HOLDER_PREFIX + "*")):
        try:
            rec = json.loads(p.read_text())
            host, pid = str(rec["host"]), int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if io.process_alive(host, pid):
            found.append(rec)
        else:
            p.unlink(missing_ok=True)
    return found


def _describe(recs: list[dict]) -> str:
    if not recs:
        return "holder unknown: it is starting or ending"
    return ", ".join(f"pid {r['pid']} on host {r['host']}" + (f", shard {r['shard']}" if r.get("shard") else "")
                     + f", since {r.get('since', '?')}" for r in recs)


def _flock(path: Path, mode: int) -> int | None:
    """An open descriptor of ``path`` holding ``mode`` (LOCK_SH / LOCK_EX), or None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, io.FILE_MODE)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def hold(out: str | os.PathLike, shard: tuple[int, int] | None = None):
    """Hold ``out`` for one run (or one shard of a run) for the duration of the block; the
    directory is created if needed. Raises :class:`RunLockedError` at once when taken."""
    out = io.make_dirs(out)
    fds = []
    try:
        fd = _flock(out / LOCK_NAME, fcntl.LOCK_SH if shard else fcntl.LOCK_EX)
        if fd is None:
            what = "this OUT" if shard is None else f"this OUT unsharded (shard {shard[0]}/{shard[1]} cannot join it)"
            raise RunLockedError(f"{out}: another run holds {what} ({_describe(holders(out))}); wait for it to "
                                 f"finish or choose another --out")
        fds.append(fd)
        if shard is not None:
            k, n = shard
            fd = _flock(out / f"{LOCK_NAME}-shard-{k}-of-{n}", fcntl.LOCK_EX)
            if fd is None:
                same = [r for r in holders(out) if r.get("shard") == f"{k}/{n}"]
                raise RunLockedError(f"{out}: shard {k}/{n} is already being rendered ({_describe(same)}); "
                                     f"each shard runs once at a time")
            fds.append(fd)
        holders(out)   # drop records of dead processes
        tag = f"shard-{shard[0]}-of-{shard[1]}" if shard else "all"
        record = out / f"{HOLDER_PREFIX}{_HOST}--{os.getpid()}--{tag}"
        io.write_json(record, {"pid": os.getpid(), "host": _HOST,
                               "shard": f"{shard[0]}/{shard[1]}" if shard else None,
                               "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        try:
            yield out
        finally:
            record.unlink(missing_ok=True)
    finally:
        for fd in reversed(fds):
            os.close(fd)   # closing the last descriptor releases the flock
