"""Backups of everything a runtime keeps, and an archive tier for what nothing reads any more.

A backup is a *snapshot*: ``DIR/<UTC time>/`` holding the data store, the journals, the model
registry, the LLM journal, the logs and the reports, with a ``manifest.json`` listing every file
(path, size, sha256, mode). Snapshots are incremental: a file unchanged since the previous snapshot
(same size, modification time and mode) is a hard link to that snapshot's copy, so each snapshot is
complete on its own but costs only what changed; across devices the link falls back to a copy.
SQLite files (journals, the LLM journal, MLflow's database) are copied with SQLite's online backup
API, which reads one consistent state even while a runtime writes; the ``-wal``/``-shm`` files are
never copied raw (a main file copied without its WAL, or with a WAL from another moment, is not the
database). A snapshot is built under ``DIR/.partial-<time>/`` and renamed into place once its
manifest is written: any write error (a full disk) removes the partial folder and leaves the earlier
snapshots as they were. Retention keeps the newest ``keep`` snapshots.

The archive tier (``DIR/archive/``, listed in ``DIR/archive/manifest.json``) takes what a working disk
no longer needs: the kept data of *superseded* store versions (a previous version of a partition,
superseded more than N days ago, pinned by no report left on the disk and by no ``[data] pin``) and
report folders older than N days. The store's current partitions, which every backtest and runtime
reads, never move, nor does any journal. ``restore_archive`` brings them back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hflite import __version__, logs

if TYPE_CHECKING:
    from hflite.config import Settings

try:  # POSIX: one backup at a time into a folder
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ARCHIVE_DIR",
    "ArchiveResult",
    "BackupError",
    "BackupResult",
    "RestoreResult",
    "Source",
    "archive",
    "backup",
    "list_snapshots",
    "restore",
    "restore_archive",
    "sources",
]

log = logs.get("hflite.ops.backup")

Progress = Callable[[str, float], None]

MANIFEST = "manifest.json"
ARCHIVE_DIR = "archive"
FORMAT = 1
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_SNAPSHOT_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
_PARTIAL = ".partial-"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDECARS = ("-wal", "-shm", "-journal")  # SQLite's: never copied raw
_CHUNK = 1 << 20
_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}
_REPORT_MARKERS = ("report.html", "metrics.json", "drift.html")
_FILE_FIELDS = ("path", "hot_hash", "archive")  # a store version record's file fields (data.store)


class BackupError(Exception):
    """A backup, archive or restore that cannot be done; the message is one line naming the file."""


@dataclass(frozen=True)
class Source:
    """One thing a snapshot holds: ``name`` (its folder in the snapshot), where it is now (``path``),
    how the config names it (``origin``, relative to the project folder or absolute), and its kind."""

    name: str
    path: Path
    origin: str
    kind: Literal["dir", "file"]


@dataclass
class ArchiveResult:
    """What ``archive`` moved to ``DIR/archive``."""

    versions: list[str] = field(default_factory=list)  # "<key>@<hash12>"
    reports: list[str] = field(default_factory=list)  # report folder names
    bytes: int = 0


@dataclass
class BackupResult:
    """One snapshot written: its folder, how many files were linked (unchanged) or copied."""

    snapshot: Path
    files: int
    linked: int
    copied: int
    bytes_copied: int
    removed: list[str]
    archived: ArchiveResult | None = None


@dataclass
class RestoreResult:
    """What ``restore`` wrote: per component, the folder or file it went to."""

    snapshot: str
    targets: dict[str, Path]
    files: int
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# what a snapshot holds


def _origin(path: Path) -> str:
    return path.as_posix()


def _under(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def sources(settings: Settings, base: Path | None = None) -> list[Source]:
    """Everything the config points at, resolved against ``base`` (default: the working folder, as
    every ``hflite`` command resolves relative paths)."""
    base = base or Path.cwd()
    data_dir = Path(settings.data.dir).expanduser()
    journal_dir = data_dir.parent / "journal"  # engine.live.default_journal
    pairs: list[tuple[str, Path, Literal["dir", "file"]]] = [
        ("data", data_dir, "dir"),
        ("journal", journal_dir, "dir"),
        ("models", Path(settings.ai.registry_dir).expanduser(), "dir"),
        ("llm", Path(settings.llm.journal).expanduser(), "file"),
        ("logs", Path(settings.runtime.log_dir).expanduser(), "dir"),
        ("reports", Path(settings.report.dir).expanduser(), "dir"),
    ]
    if settings.data.archive_dir is not None:
        pairs.append(("data_archive", Path(settings.data.archive_dir).expanduser(), "dir"))
    run_journal = settings.runtime.journal
    if run_journal is not None and Path(run_journal).expanduser().parent != journal_dir:
        pairs.append(("run_journal", Path(run_journal).expanduser(), "file"))
    return [Source(name, _under(base, p).absolute(), _origin(p), kind) for name, p, kind in pairs]


def _skipped(name: str) -> bool:
    """Files never copied: SQLite's sidecars, lock files and the temporary files of a writer."""
    return (
        name.endswith(_SIDECARS)
        or name.endswith(".lock")
        or name.endswith(".tmp")
        or name.startswith((".tmp-", ".del-"))
    )


def _walk(source: Source, exclude: list[Path]) -> Iterator[tuple[str, Path]]:
    """``(path in the snapshot, file)`` for every file of ``source``, sorted; symlinks, the skipped
    names, the runtimes' lock registry and the ``exclude`` folders (other sources, DIR) left out."""
    from hflite.execution.oms import REGISTRY_DIR

    if source.kind == "file":
        if source.path.is_file() and not source.path.is_symlink():
            yield f"{source.name}/{source.path.name}", source.path
        return
    if not source.path.is_dir():
        return
    for top, dirs, files in os.walk(source.path):
        here = Path(top)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith((".tmp-", ".del-"))
            and not (source.name == "journal" and here == source.path and d == REGISTRY_DIR)
            and (here / d) not in exclude
            and not (here / d).is_symlink()
        )
        for name in sorted(files):
            path = here / name
            if _skipped(name) or path.is_symlink() or path in exclude:
                continue
            yield f"{source.name}/{path.relative_to(source.path).as_posix()}", path


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------
# files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_file(src: Path, dst: Path) -> tuple[int, str]:
    """Copy ``src`` to the new file ``dst`` (fsynced); returns the bytes copied and their sha256.
    The one place a backup writes file data, so a full disk surfaces here as OSError(ENOSPC)."""
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return size, digest.hexdigest()


def _verify(path: Path, sha256: str) -> None:
    """Read a written file back; a difference is a write error (bad disk, or a file changed under us)."""
    if _sha256(path) != sha256:
        raise OSError(errno.EIO, "checksum of the written copy differs from the source's", str(path))


def _copy_sqlite(src: Path, dst: Path) -> None:
    """One consistent state of a live SQLite database (the runtime may be writing it), self-contained:
    rollback-journal mode, so the copy needs no ``-wal``; checked with ``quick_check``."""
    source = sqlite3.connect(str(src), timeout=30.0)
    try:
        target = sqlite3.connect(str(dst))
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
            ok = target.execute("PRAGMA quick_check").fetchone()
        finally:
            target.close()
    finally:
        source.close()
    if not ok or ok[0] != "ok":
        raise OSError(errno.EIO, f"the copy fails SQLite's quick_check: {ok[0] if ok else '?'}", str(dst))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode("utf-8")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{what} {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{what} {path} is unreadable: {exc}") from None
    if not isinstance(payload, dict):
        raise BackupError(f"{what} {path} is not a JSON object")
    return payload


def _reason(exc: BaseException) -> str:
    """One line for a failed write: the disk is full, or the OS error and the file."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on the device{where}"
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, sqlite3.Error) and "full" in str(exc):
        return f"no space left on the device ({exc})"
    return str(exc)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One backup, archive or restore at a time per backup folder."""
    with (folder / ".lock").open("a+b") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupError(
                    f"another backup or restore is using {folder}; try again when it ends"
                ) from None
        yield


# ---------------------------------------------------------------------------------------------------
# snapshots


def list_snapshots(folder: Path) -> list[str]:
    """The complete snapshots in ``folder``, oldest first (a partial one is never listed)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if _SNAPSHOT_RE.match(p.name) and (p / MANIFEST).is_file())


def _new_name(folder: Path, now: datetime | None) -> str:
    moment = now or datetime.now(UTC)
    while True:
        name = moment.astimezone(UTC).strftime(_STAMP)
        if not (folder / name).exists() and not (folder / f"{_PARTIAL}{name}").exists():
            return name
        moment += timedelta(microseconds=1)


@dataclass
class _Snapshot:
    """The snapshot being written: its entries and counts."""

    root: Path
    previous: Path | None
    before: dict[str, dict[str, Any]]
    entries: list[dict[str, Any]] = field(default_factory=list)
    linked: int = 0
    copied: int = 0
    bytes_copied: int = 0

    def _link(self, arc: str, dst: Path, old: dict[str, Any]) -> bool:
        """Hard-link the previous snapshot's copy of ``arc`` (False: not possible here, copy it)."""
        assert self.previous is not None
        prior = self.previous / arc
        try:
            os.link(prior, dst)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in _LINK_FALLBACK:
                return False
            raise
        if dst.stat().st_size != old["size"]:  # the previous snapshot was altered: copy afresh
            dst.unlink()
            return False
        self.linked += 1
        return True

    def add_file(self, arc: str, src: Path) -> None:
        try:
            st = src.stat()
        except FileNotFoundError:  # went away since the listing (a rotated log, a replaced report)
            return
        mode = stat.S_IMODE(st.st_mode)
        dst = self.root / arc
        dst.parent.mkdir(parents=True, exist_ok=True)
        old = self.before.get(arc)
        unchanged = (
            old is not None
            and not old.get("sqlite")
            and (old["size"], old.get("mtime_ns"), old["mode"]) == (st.st_size, st.st_mtime_ns, f"{mode:04o}")
        )
        if unchanged and old is not None and self._link(arc, dst, old):
            sha256, size = old["sha256"], old["size"]
        else:
            try:
                size, sha256 = _copy_file(src, dst)
            except FileNotFoundError as exc:
                if exc.filename is not None and Path(exc.filename) == src:
                    log.info("backup.file_vanished", path=str(src))
                    return
                raise
            _verify(dst, sha256)
            os.chmod(dst, mode)
            self.copied += 1
            self.bytes_copied += size
        self.entries.append(
            {"path": arc, "size": size, "sha256": sha256, "mode": f"{mode:04o}", "mtime_ns": st.st_mtime_ns}
        )

    def add_sqlite(self, arc: str, src: Path) -> None:
        try:
            mode = stat.S_IMODE(src.stat().st_mode)
        except FileNotFoundError:
            return
        dst = self.root / arc
        dst.parent.mkdir(parents=True, exist_ok=True)
        _copy_sqlite(src, dst)
        os.chmod(dst, mode)
        size, sha256 = dst.stat().st_size, _sha256(dst)
        old = self.before.get(arc)
        if old is not None and (old["size"], old["sha256"]) == (size, sha256) and self.previous is not None:
            spare = dst.with_name(f".{dst.name}.copy")
            os.replace(dst, spare)
            if self._link(arc, dst, old):
                spare.unlink()
            else:
                os.replace(spare, dst)
                self.copied += 1
                self.bytes_copied += size
        else:
            self.copied += 1
            self.bytes_copied += size
        self.entries.append(
            {"path": arc, "size": size, "sha256": sha256, "mode": f"{mode:04o}", "sqlite": True}
        )


def _previous(folder: Path) -> tuple[Path | None, dict[str, dict[str, Any]]]:
    names = list_snapshots(folder)
    if not names:
        return None, {}
    newest = folder / names[-1]
    try:
        manifest = _read_json(newest / MANIFEST, "snapshot manifest")
    except BackupError as exc:  # an unreadable previous manifest: this snapshot copies everything
        log.warning("backup.previous_unreadable", error=str(exc))
        return None, {}
    return newest, {e["path"]: e for e in manifest.get("files", []) if isinstance(e, dict) and "path" in e}


def _prune(folder: Path, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` snapshots and any partial one a killed backup left."""
    for stale in folder.glob(f"{_PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)
    names = list_snapshots(folder)
    removed = names[: max(len(names) - keep, 0)]
    for name in removed:
        shutil.rmtree(folder / name)
        log.info("backup.snapshot_removed", snapshot=name)
    return removed


def backup(
    settings: Settings,
    to: Path,
    *,
    keep: int = 7,
    archive_older_than_days: float | None = None,
    config: str = "",
    base: Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> BackupResult:
    """Write a snapshot of everything ``settings`` points at into ``to`` (see the module docstring);
    first, with ``archive_older_than_days``, move what is older than that to ``to/archive``."""
    if keep < 1:
        raise BackupError(f"--keep must be at least 1, got {keep}")
    say = progress or (lambda _m, _f: None)
    to = to.expanduser().absolute()
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create the backup folder {to}: {exc.strerror or exc}") from None
    with _folder_lock(to):
        archived = None
        if archive_older_than_days is not None:
            archived = archive(settings, to, archive_older_than_days, base=base, progress=say, now=now)
        snap = _write_snapshot(settings, to, config, base, say, now)
        removed = _prune(to, keep)
    snap.removed, snap.archived = removed, archived
    log.info(
        "backup.done", snapshot=str(snap.snapshot), files=snap.files, linked=snap.linked, copied=snap.copied
    )
    return snap


def _write_snapshot(
    settings: Settings, to: Path, config: str, base: Path | None, say: Progress, now: datetime | None
) -> BackupResult:
    srcs = sources(settings, base)
    items: list[tuple[str, Path]] = []
    for s in srcs:  # a source inside another is that one's alone (e.g. the LLM journal in var/models)
        exclude = [to, *(o.path for o in srcs if o is not s and s.path in o.path.parents)]
        items.extend(_walk(s, exclude))
    previous, before = _previous(to)
    name = _new_name(to, now)
    partial = to / f"{_PARTIAL}{name}"
    snap = _Snapshot(partial, previous, before)
    try:
        partial.mkdir()
        for i, (arc, path) in enumerate(items):
            say(f"backup {arc}"[:60], i / max(len(items), 1))
            (snap.add_sqlite if _is_sqlite(path) else snap.add_file)(arc, path)
        created = (now or datetime.now(UTC)).astimezone(UTC).isoformat()
        manifest = {
            "format": FORMAT,
            "name": name,
            "created": created,
            "hflite": __version__,
            "config": config,
            "base": str((base or Path.cwd()).absolute()),
            "previous": previous.name if previous else None,
            "sources": {s.name: {"origin": s.origin, "kind": s.kind} for s in srcs},
            "files": snap.entries,
        }
        _write_json(partial / MANIFEST, manifest)
        os.replace(partial, to / name)
        _fsync_dir(to)
    except (OSError, sqlite3.Error) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        log.info("backup.failed", folder=str(to), error=_reason(exc))
        raise BackupError(
            f"backup failed: {_reason(exc)}; the partial snapshot was removed, earlier snapshots in {to} "
            "are untouched"
        ) from None
    say("backup done", 1.0)
    return BackupResult(to / name, len(snap.entries), snap.linked, snap.copied, snap.bytes_copied, [])


# ---------------------------------------------------------------------------------------------------
# restore


def _pick(folder: Path, snapshot: str | None) -> str:
    names = list_snapshots(folder)
    if snapshot is not None:
        if snapshot not in names:
            have = ", ".join(names[-5:]) or "none"
            raise BackupError(f"no snapshot {snapshot!r} in {folder} (newest: {have})")
        return snapshot
    if not names:
        raise BackupError(f"no snapshot in {folder}: `hflite backup --to {folder}` makes one")
    return names[-1]


def _targets(
    manifest: dict[str, Any], settings: Settings | None, into: Path | None, base: Path
) -> dict[str, tuple[Path, str]]:
    """Component -> (where it goes, its kind): under ``into`` by its recorded path, else where the
    current config points (a component it does not name: its recorded path)."""
    current = {s.name: s.path for s in sources(settings, base)} if settings is not None else {}
    out: dict[str, tuple[Path, str]] = {}
    for name, info in manifest.get("sources", {}).items():
        origin = Path(info["origin"])
        if into is not None:
            target = into / (origin if not origin.is_absolute() else Path(name))
        else:
            target = current.get(name) or _under(base, origin)
        out[name] = (target.absolute(), info["kind"])
    return out


def _occupied(targets: dict[str, tuple[Path, str]], used: set[str]) -> list[str]:
    busy = []
    for name, (path, kind) in targets.items():
        if name not in used:
            continue
        if (kind == "file" and path.exists()) or (kind == "dir" and path.is_dir() and any(path.iterdir())):
            busy.append(f"{name} ({path})")
    return busy


def _destination(targets: dict[str, tuple[Path, str]], arc: str) -> Path:
    name, _, rel = arc.partition("/")
    path, kind = targets[name]
    return path if kind == "file" else path / rel


def _check_snapshot(root: Path, entries: list[dict[str, Any]], say: Progress) -> None:
    """Every file of the snapshot has the size and sha256 its manifest records, before anything is
    written (a restore never stops half-way on a damaged backup)."""
    for i, e in enumerate(entries):
        say(f"verify {e['path']}"[:60], 0.5 * i / max(len(entries), 1))
        path = root / e["path"]
        if not path.is_file():
            raise BackupError(f"snapshot {root.name}: {e['path']} is missing; try another with --snapshot")
        if path.stat().st_size != e["size"] or _sha256(path) != e["sha256"]:
            raise BackupError(
                f"snapshot {root.name}: {e['path']} is corrupted (its sha256 differs from the manifest); "
                "try another with --snapshot"
            )


def _entries(manifest: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The manifest's file entries; a path that would leave its folder (absolute, ``..``) is refused."""
    entries = [e for e in manifest.get("files", []) if isinstance(e, dict)]
    for e in entries:
        rel = Path(str(e.get("path", "")))
        if not e.get("path") or rel.is_absolute() or ".." in rel.parts:
            raise BackupError(f"{what}: manifest entry {e.get('path')!r} is not a path inside the backup")
    return entries


def _place(src: Path, dst: Path, entry: dict[str, Any]) -> None:
    """Copy one verified snapshot file to ``dst`` atomically (temp file + rename), with its mode; a
    SQLite file loses any ``-wal``/``-shm`` left beside the old one (SQLite would replay them into it)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.restore-{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        _size, sha256 = _copy_file(src, tmp)
        _verify(tmp, sha256)
        os.chmod(tmp, int(entry["mode"], 8))
        if entry.get("sqlite"):
            for suffix in _SIDECARS:
                with contextlib.suppress(FileNotFoundError):
                    dst.with_name(dst.name + suffix).unlink()
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _live_journals(targets: dict[str, tuple[Path, str]], entries: list[dict[str, Any]]) -> list[str]:
    from hflite.execution.oms import journal_owner

    live = []
    for e in entries:
        if e.get("sqlite"):
            dst = _destination(targets, e["path"])
            owner = journal_owner(dst) if dst.exists() else None
            if owner is not None:
                live.append(f"{dst} (pid {owner.pid})")
    return live


def restore(
    source: Path,
    *,
    settings: Settings | None = None,
    snapshot: str | None = None,
    into: Path | None = None,
    force: bool = False,
    base: Path | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore the newest (or the named) snapshot in ``source``: every checksum is verified first;
    a non-empty target is refused unless ``force``; a journal a live runtime owns is always refused."""
    say = progress or (lambda _m, _f: None)
    source = source.expanduser().absolute()
    if not source.is_dir():
        raise BackupError(f"backup folder {source} does not exist")
    base = (base or Path.cwd()).absolute()
    with _folder_lock(source):
        name = _pick(source, snapshot)
        root = source / name
        manifest = _read_json(root / MANIFEST, "snapshot manifest")
        entries = _entries(manifest, f"snapshot {name}")
        targets = _targets(manifest, settings, into.expanduser().absolute() if into else None, base)
        used = {e["path"].partition("/")[0] for e in entries}
        unknown = used - set(targets)
        if unknown:
            raise BackupError(f"snapshot {name}: manifest lists files of unknown parts {sorted(unknown)}")
        busy = _occupied(targets, used)
        if busy and not force:
            raise BackupError(
                f"refusing to overwrite what is there: {', '.join(busy)}; restore --into an empty folder, "
                "or add --force to overwrite"
            )
        live = _live_journals(targets, entries)
        if live:
            raise BackupError(f"a runtime is using {', '.join(live)}: stop it first (hflite risk kill)")
        _check_snapshot(root, entries, say)
        try:
            for i, e in enumerate(entries):
                say(f"restore {e['path']}"[:60], 0.5 + 0.5 * i / max(len(entries), 1))
                _place(root / e["path"], _destination(targets, e["path"]), e)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"restore of {name} failed: {_reason(exc)}") from None
    say("restore done", 1.0)
    notes = ["other files already in the targets were left as they were"] if busy else []
    log.info("restore.done", snapshot=name, files=len(entries))
    return RestoreResult(name, {n: targets[n][0] for n in sorted(used)}, len(entries), notes)


# ---------------------------------------------------------------------------------------------------
# the archive tier


def _archive_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        return {"format": FORMAT, "items": []}
    manifest = _read_json(path, "archive manifest")
    manifest.setdefault("items", [])
    return manifest


def _copy_into_archive(src: Path, dst: Path) -> tuple[int, str]:
    """Copy (or keep an identical copy already there) and verify; returns (bytes written, sha256)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_file():
        want = _sha256(src)
        if _sha256(dst) == want:
            return 0, want
        dst.unlink()
    try:
        size, sha256 = _copy_file(src, dst)
        _verify(dst, sha256)
    except BaseException:  # a full disk: no half-written file left in the archive
        with contextlib.suppress(OSError):
            dst.unlink()
        raise
    return size, sha256


def _pinned(settings: Settings, keep_reports: list[Path]) -> set[tuple[str, str]]:
    """(key, version prefix) pairs something still on the working disk may read: ``[data] pin`` and
    the pins of every report folder that stays (``hflite backtest --rerun`` reads them)."""
    pins = set(settings.data.pin.items())
    for folder in keep_reports:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            recorded = json.loads((folder / "config.json").read_text(encoding="utf-8"))["data"]["pin"]
            pins.update((str(k), str(v)) for k, v in recorded.items())
    return pins


def _is_pinned(pins: set[tuple[str, str]], key: str, version: str) -> bool:
    return any(k == key and version.startswith(v) for k, v in pins)


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for top, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                newest = max(newest, (Path(top) / name).stat().st_mtime)
    return newest


def _report_folders(report_dir: Path) -> list[Path]:
    if not report_dir.is_dir():
        return []
    return sorted(
        p
        for p in report_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and any((p / m).is_file() for m in _REPORT_MARKERS)
    )


def _superseded(manifest: dict[str, Any], cutoff: datetime) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(key, history record, superseded-at) for each kept previous version superseded before
    ``cutoff`` whose data lives only in the store folder (no archive-tier part)."""
    for key, entry in sorted(manifest.get("partitions", {}).items()):
        history = entry.get("history", [])
        for i, record in enumerate(history):
            if "path" not in record or record.get("archive"):
                continue
            after = history[i + 1]["written_at"] if i + 1 < len(history) else entry["written_at"]
            if datetime.fromisoformat(after) < cutoff:
                yield key, record, after


def _referenced(manifest: dict[str, Any], moving: set[int]) -> set[str]:
    """Store-relative paths some record that is not moving still refers to."""
    paths = set()
    for entry in manifest.get("partitions", {}).values():
        for record in (entry, *entry.get("history", [])):
            if id(record) not in moving and "path" in record:
                paths.add(record["path"])
    return paths


def _version_item(
    key: str, record: dict[str, Any], superseded_at: str, rel: str, sha256: str, src: Path
) -> dict[str, Any]:
    st = src.stat()
    return {
        "kind": "data_version",
        "key": key,
        "version": record["hash"],
        "fields": {k: record[k] for k in _FILE_FIELDS if k in record},
        "superseded_at": superseded_at,
        "archived_at": datetime.now(UTC).isoformat(),
        "files": [
            {"path": rel, "size": st.st_size, "sha256": sha256, "mode": f"{stat.S_IMODE(st.st_mode):04o}"}
        ],
    }


def _archive_versions(
    store_root: Path, folder: Path, manifest_out: dict[str, Any], cutoff: datetime, pins: set[tuple[str, str]]
) -> tuple[list[str], int]:
    """Move superseded versions' files from the store to ``folder/data``, all under the store's write
    lock: copy and verify, list them in the archive manifest, commit the store manifest without their
    file fields (its history keeps their hashes), then delete the originals. Killed at any point, each
    version is readable from the store or listed in the archive."""
    from hflite.data.store import MANIFEST_NAME, Store

    if not (store_root / MANIFEST_NAME).is_file():
        return [], 0
    store = Store(store_root)
    written = 0
    with store._write_lock():  # the store's own lock: no update commits while versions move
        manifest = store._load_manifest()
        found = [(k, r, t) for k, r, t in _superseded(manifest, cutoff) if not _is_pinned(pins, k, r["hash"])]
        keep = _referenced(manifest, {id(r) for _k, r, _t in found})
        found = [(k, r, t) for k, r, t in found if r["path"] not in keep]
        if not found:
            return [], 0
        items = []
        for key, record, superseded_at in found:
            rel = f"data/{record['path']}"
            src = store_root / record["path"]
            size, sha256 = _copy_into_archive(src, folder / rel)
            written += size
            items.append(_version_item(key, record, superseded_at, rel, sha256, src))
        again = {(i["key"], i["version"]) for i in items}  # archived before, restored, archived again
        manifest_out["items"] = [
            i
            for i in manifest_out["items"]
            if not (i["kind"] == "data_version" and (i["key"], i["version"]) in again)
        ] + items
        _write_json(folder / MANIFEST, manifest_out)  # listed before the store lets them go
        for _key, record, _t in found:
            for k in _FILE_FIELDS:
                record.pop(k, None)
            record["archived_to"] = str(folder)
        store._save_manifest(manifest)
        for item in items:
            with contextlib.suppress(FileNotFoundError):
                (store_root / item["fields"]["path"]).unlink()
    return [f"{i['key']}@{i['version'][:12]}" for i in items], written


def _archive_report(report: Path, folder: Path, taken: set[str]) -> tuple[dict[str, Any], int]:
    name = report.name
    while f"reports/{name}" in taken:
        name = f"{report.name}.{datetime.now(UTC).strftime(_STAMP)}"
    files, written = [], 0
    for top, _dirs, names in os.walk(report):
        for fname in sorted(names):
            src = Path(top) / fname
            rel = f"reports/{name}/{src.relative_to(report).as_posix()}"
            size, sha256 = _copy_into_archive(src, folder / rel)
            written += size
            files.append({"path": rel, "size": src.stat().st_size, "sha256": sha256,
                          "mode": f"{stat.S_IMODE(src.stat().st_mode):04o}"})  # fmt: skip
    item = {
        "kind": "report",
        "name": report.name,
        "stored_as": f"reports/{name}",
        "archived_at": datetime.now(UTC).isoformat(),
        "files": files,
    }
    return item, written


def archive(
    settings: Settings,
    to: Path,
    older_than_days: float,
    *,
    base: Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ArchiveResult:
    """Move superseded store versions and report folders older than ``older_than_days`` into
    ``to/archive`` (checksummed, listed in its manifest). Never the store's current partitions, a
    version a report on the disk or ``[data] pin`` reads, nor any journal."""
    if older_than_days < 0:
        raise BackupError(f"--archive-older-than must be >= 0 days, got {older_than_days}")
    say = progress or (lambda _m, _f: None)
    base = (base or Path.cwd()).absolute()
    folder = to.expanduser().absolute() / ARCHIVE_DIR
    cutoff = (now or datetime.now(UTC)).astimezone(UTC) - timedelta(days=older_than_days)
    store_root = _under(base, Path(settings.data.dir).expanduser())
    report_dir = _under(base, Path(settings.report.dir).expanduser())
    reports = _report_folders(report_dir)
    old = [r for r in reports if _newest_mtime(r) < cutoff.timestamp()]
    pins = _pinned(settings, [r for r in reports if r not in old])
    result = ArchiveResult()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        manifest = _archive_manifest(folder)
        say("archive: data versions", 0.0)
        result.versions, result.bytes = _archive_versions(store_root, folder, manifest, cutoff, pins)
        taken = {i.get("stored_as", "") for i in manifest["items"]}
        for n, report in enumerate(old):
            say(f"archive: {report.name}"[:60], (n + 1) / max(len(old), 1))
            item, written = _archive_report(report, folder, taken)
            taken.add(item["stored_as"])
            manifest["items"].append(item)
            _write_json(folder / MANIFEST, manifest)
            shutil.rmtree(report)
            result.reports.append(report.name)
            result.bytes += written
    except (OSError, sqlite3.Error) as exc:
        log.info("archive.failed", folder=str(folder), error=_reason(exc))
        raise BackupError(
            f"archive failed: {_reason(exc)}; nothing was removed from the working disk that is not "
            f"listed in {folder / MANIFEST}"
        ) from None
    log.info("archive.done", versions=len(result.versions), reports=len(result.reports), bytes=result.bytes)
    return result


def _check_item(folder: Path, item: dict[str, Any]) -> None:
    """An archived item's files are there with their sha256, and every path stays inside its folder."""
    what = f"archive {folder}"
    back = item.get("fields", {}).get("path") if item.get("kind") == "data_version" else item.get("name")
    _entries({"files": [{"path": back}]}, what)  # where it goes back to, too
    for f in _entries(item, what):
        path = folder / f["path"]
        if not path.is_file() or _sha256(path) != f["sha256"]:
            state = "missing" if not path.is_file() else "corrupted (its sha256 differs from the manifest)"
            raise BackupError(f"{what}: {f['path']} is {state}")


def _restore_versions(store_root: Path, folder: Path, items: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Copy archived versions back into the store and give their history records their files again."""
    from hflite.data.store import MANIFEST_NAME, Store

    if not items:
        return 0, []
    if not (store_root / MANIFEST_NAME).is_file():
        return 0, [f"no data store at {store_root}: {len(items)} archived version(s) not restored"]
    store = Store(store_root)
    restored, notes = 0, []
    with store._write_lock():
        manifest = store._load_manifest()
        for item in items:
            history = manifest["partitions"].get(item["key"], {}).get("history", [])
            record = next((h for h in history if h["hash"] == item["version"]), None)
            if record is None:
                notes.append(
                    f"{item['key']}@{item['version'][:12]}: no longer in the store's history; skipped"
                )
                continue
            if "path" not in record:
                for f in item["files"]:
                    _place(folder / f["path"], store_root / item["fields"]["path"], f)
                record.update(item["fields"])
                record.pop("archived_to", None)
                restored += 1
        store._save_manifest(manifest)
    return restored, notes


def _restore_report(report_dir: Path, folder: Path, item: dict[str, Any]) -> str | None:
    target = report_dir / item["name"]
    if target.exists():
        return f"report {item['name']}: {target} exists; left as it is"
    prefix = item["stored_as"] + "/"
    for f in item["files"]:
        _place(folder / f["path"], target / f["path"][len(prefix) :], f)
    return None


def restore_archive(
    source: Path,
    *,
    settings: Settings,
    into: Path | None = None,
    base: Path | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Bring the archive tier of ``source`` back: archived versions into the store (readable again
    with ``read_bars(version=...)`` and ``backtest --rerun``), report folders into report.dir. The
    archive keeps its copies. Every file is verified before anything is written."""
    say = progress or (lambda _m, _f: None)
    folder = source.expanduser().absolute() / ARCHIVE_DIR
    if not (folder / MANIFEST).is_file():
        raise BackupError(f"no archive in {source}: `hflite backup --archive-older-than DAYS` makes one")
    root = (into.expanduser().absolute() if into else None) or (base or Path.cwd()).absolute()
    store_root = _under(root, Path(settings.data.dir).expanduser())
    report_dir = _under(root, Path(settings.report.dir).expanduser())
    with _folder_lock(source.expanduser().absolute()):
        items = _archive_manifest(folder)["items"]
        for i, item in enumerate(items):
            say("verify archive", 0.5 * i / max(len(items), 1))
            _check_item(folder, item)
        try:
            n_versions, notes = _restore_versions(
                store_root, folder, [i for i in items if i["kind"] == "data_version"]
            )
            n_reports = 0
            for item in (i for i in items if i["kind"] == "report"):
                note = _restore_report(report_dir, folder, item)
                notes += [note] if note else []
                n_reports += note is None
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"archive restore failed: {_reason(exc)}") from None
    say("archive restored", 1.0)
    log.info("archive.restored", versions=n_versions, reports=n_reports)
    targets = {"data": store_root, "reports": report_dir}
    files = sum(len(i["files"]) for i in items)
    return RestoreResult(
        ARCHIVE_DIR, targets, files, [f"{n_versions} version(s), {n_reports} report(s)", *notes]
    )
