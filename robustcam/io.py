"""Files on disk: atomic writes, one-line errors for full disks and unreadable files, locks.

Writes go to a temporary file in the same directory, are flushed and fsynced, then
``os.replace``d over the target (atomic on POSIX and Windows): a reader sees the old file or
the new one, never half of one, and a failed write leaves no temporary file behind. A write
that fails for lack of space, quota or permission (an ``OSError``, or the ``RuntimeError``
that torch.save raises when the stream under it fails) is a ``StorageError`` that names the
file, the system's reason and what was kept.

A file robustcam wrote that cannot be read back (garbage, truncated, binary where text was
expected, a JSON list where an object was written) is a ``CorruptFileError`` that names the
file and how to recover. Reading never runs code: JSON, CSV and YAML are parsed as data, and
``.pt`` files go through ``robustcam.checkpoint.reading`` (``weights_only=True``).

A run, eval or sweep cell directory is written under ``directory_lock``: an OS lock
(``filelock``), so a second process finds the directory busy instead of redoing its work, and
the lock of a process that died is free again whatever files it left behind.
"""

from __future__ import annotations

import errno as errno_names
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import filelock
import pandas as pd
import torch

from robustcam.errors import RobustcamError
from robustcam.layout import LOCK_FILE, LOCK_OWNER_FILE

RETRY_HINT = "free space (or fix the permissions) and run the same command again"
DEFAULT_KEPT = f"any earlier version of it is intact and no partial file is left; {RETRY_HINT}"
# what torch.save's zip writer raises, as a RuntimeError, when the stream under it fails
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed", "iostream error")
_SNIFF_BYTES = 8192  # how much of a text file is looked at for binary content


class StorageError(RobustcamError, OSError):
    """A file could not be written: a full disk, a quota, a read-only or forbidden folder.

    Also an ``OSError``, so Python callers that caught the underlying error still catch it. The
    message names the file, the system's reason and what was kept; a caller that knows more
    about what was kept (a run's last finished epoch) says so with ``keeping``.
    """

    def __init__(self, path: str | Path, reason: str, kept: str = DEFAULT_KEPT) -> None:
        self.path, self.reason, self.kept = Path(path), reason, kept
        super().__init__(f"could not write {self.path}: {reason}; {kept}")

    def keeping(self, kept: str) -> StorageError:
        """The same failure, saying ``kept`` about what is intact and how to go on."""
        return StorageError(self.path, self.reason, kept)

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable with its own arguments: sweep cells raise it in worker processes and Ray tasks
        return (type(self), (self.path, self.reason, self.kept))


class CorruptFileError(RobustcamError, ValueError):
    """A file that robustcam wrote, or should have, and cannot read back."""


class DirectoryBusyError(RobustcamError):
    """Another live process holds the lock of a directory that this one was about to write."""


# --------------------------------------------------------------------------- writing


def _squeeze(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def os_reason(error: BaseException) -> str:
    """The system's reason for an ``OSError``: ``No space left on device (ENOSPC)``."""
    code = getattr(error, "errno", None)
    if isinstance(code, int) and code in errno_names.errorcode:
        return f"{os.strerror(code)} ({errno_names.errorcode[code]})"
    return _squeeze(str(error)) or type(error).__name__


def _os_error_in_chain(error: BaseException) -> OSError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def storage_reason(error: BaseException) -> str | None:
    """Why a write failed, when ``error`` is a storage failure (else None): an ``OSError``, or
    torch.save's ``RuntimeError`` over a failed stream, whose ``OSError`` is in its context."""
    if isinstance(error, OSError):
        return os_reason(error)
    if isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES):
        underlying = _os_error_in_chain(error)
        return os_reason(underlying) if underlying is not None else f"torch.save failed ({_squeeze(str(error))})"
    return None


def make_dir(path: str | Path) -> Path:
    """``mkdir -p``, with a ``StorageError`` for a folder that cannot be made."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(folder, os_reason(error), f"nothing was written there; {RETRY_HINT}") from error
    return folder


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file, then move it to ``path``.

    A storage failure (see ``storage_reason``) is a ``StorageError`` naming ``path``; the
    temporary file is removed whatever fails, and an existing ``path`` is left as it was.
    """
    target = Path(path)
    make_dir(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise StorageError(target, os_reason(error)) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.chmod(tmp_name, 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        reason = None if isinstance(error, StorageError) else storage_reason(error)
        if reason is not None:
            raise StorageError(target, reason) from error
        raise
    return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a truncated file behind."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


# --------------------------------------------------------------------------- reading back


def _read_bytes(source: Path, recover: str, limit: int = -1) -> bytes:
    try:
        with source.open("rb") as handle:
            return handle.read(limit)
    except OSError as error:
        raise CorruptFileError(f"{source} cannot be read ({os_reason(error)}); {recover}") from None


def _json_kind(value: object) -> str:
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_json_object(path: str | Path, *, recover: str) -> dict[str, Any]:
    """A JSON file that holds an object; anything else is a ``CorruptFileError`` that names the
    file and ends in ``recover`` (what the user can do about it)."""
    source = Path(path)
    data = _read_bytes(source, recover)
    if not data.strip():
        raise CorruptFileError(f"{source} is empty; {recover}")
    try:
        loaded = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptFileError(f"{source} holds binary data, not JSON; {recover}") from None
    except json.JSONDecodeError as error:
        raise CorruptFileError(f"{source} is not valid JSON ({error.msg}, line {error.lineno}); {recover}") from None
    if not isinstance(loaded, dict):
        raise CorruptFileError(f"{source} holds a JSON {_json_kind(loaded)}, not an object; {recover}")
    return loaded


def require_fields(
    source: Path, data: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]], *, recover: str
) -> None:
    """Each of ``fields`` is in ``data`` with its type, else a ``CorruptFileError`` naming it."""
    for name, kind in fields.items():
        if name not in data:
            raise CorruptFileError(f"{source} lacks the field {name!r}; {recover}")
        value = data[name]
        wrong_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        if not isinstance(value, kind) or wrong_bool:
            raise CorruptFileError(f"{source} has a {_json_kind(value)} as {name!r}; {recover}")


def read_csv_table(
    path: str | Path, *, recover: str, required: Sequence[str] = (), kind: str = "CSV table"
) -> pd.DataFrame:
    """A CSV file as a DataFrame; a binary, empty or unparsable file, or one without the
    ``required`` columns, is a ``CorruptFileError`` that names the file and ends in ``recover``."""
    source = Path(path)
    head = _read_bytes(source, recover, _SNIFF_BYTES)
    if b"\x00" in head:
        raise CorruptFileError(f"{source} holds binary data, not a {kind}; {recover}")
    if not head.strip():
        raise CorruptFileError(f"{source} is empty, not a {kind}; {recover}")
    try:
        frame = pd.read_csv(source)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:  # UnicodeDecodeError included
        raise CorruptFileError(f"{source} is not a readable {kind} ({_squeeze(str(error), 100)}); {recover}") from None
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise CorruptFileError(
            f"{source} is not a robustcam {kind}: it lacks the columns {', '.join(missing)}; {recover}"
        )
    return frame


# --------------------------------------------------------------------------- directory locks

# the locks this process holds, by (folder, thread): a lock is re-entrant within one thread (a
# sweep cell's lock covers the training run in the same folder), never across processes
_held: set[tuple[str, int]] = set()
_held_guard = threading.Lock()


@contextmanager
def directory_lock(
    folder: str | Path,
    *,
    what: str,
    hint: str = "wait for it to finish, or choose another --out",
    wait_s: float = 0.0,
    busy: type[DirectoryBusyError] = DirectoryBusyError,
) -> Iterator[Path]:
    """Hold ``folder``'s lock (``layout.LOCK_FILE``, the folder made if missing) while the body
    writes it; yields the folder. Re-entrant: inside a lock of the same folder it does nothing.

    A lock that another live process holds, still after ``wait_s`` seconds, is a ``busy``
    error that names ``what`` and ``folder``, the holder (pid, host, since when) and ends in
    ``hint``. The OS releases the lock of a process however it ends, so a lock file left by a
    killed process never blocks; the file itself stays, because removing it could let two
    processes lock two different files of the same name.
    """
    base = make_dir(folder)
    key = (str(base.resolve()), threading.get_ident())
    with _held_guard:
        outermost = key not in _held
    if not outermost:
        yield base
        return
    lock = _acquire(base, what=what, hint=hint, wait_s=wait_s, busy=busy)
    with _held_guard:
        _held.add(key)
    try:
        yield base
    finally:
        with _held_guard:
            _held.discard(key)
        (base / LOCK_OWNER_FILE).unlink(missing_ok=True)  # while still held: no other owner can be there yet
        lock.release()


def _acquire(
    base: Path, *, what: str, hint: str, wait_s: float, busy: type[DirectoryBusyError]
) -> filelock.BaseFileLock:
    lock = filelock.FileLock(str(base / LOCK_FILE))
    try:
        lock.acquire(timeout=wait_s)
    except filelock.Timeout:
        raise busy(f"{what} {base} is in use by another robustcam process ({lock_holder(base)}); {hint}") from None
    except OSError as error:
        raise StorageError(base / LOCK_FILE, os_reason(error), f"nothing was written there; {RETRY_HINT}") from error
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        atomic_write_text(base / LOCK_OWNER_FILE, json.dumps(owner))
    except StorageError:
        pass  # who holds the lock is only for another process's message; the lock itself is held
    return lock


def lock_holder(folder: str | Path) -> str:
    """Who holds ``folder``'s lock, as its owner file says: ``pid 123 on host gpu1 since ...``."""
    try:
        owner = json.loads((Path(folder) / LOCK_OWNER_FILE).read_text())
        return f"pid {int(owner['pid'])} on {owner['host']} since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


__all__ = [
    "CorruptFileError",
    "DirectoryBusyError",
    "StorageError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "directory_lock",
    "lock_holder",
    "make_dir",
    "os_reason",
    "read_csv_table",
    "read_json_object",
    "require_fields",
    "storage_reason",
]
