"""TokenStore in a local file: the embedded default (``TOKEN_STORE=file:///path``).

The file holds ``{connection: refresh_token}`` as JSON, so several connections fit in one file. It is never
readable by anyone else, not even for a moment: each write goes to a new temporary file in the same directory,
created with ``O_CREAT | O_EXCL`` and mode 0600 (a name nobody else can have pre-created or linked), which
then replaces the old file atomically (``os.replace``), so a reader sees the old content or the new, never
half of it. A missing directory is created 0700; an existing one is left as the user made it (it may be the
working directory). Errors name the file, never its content, which may be a token.

Writes are serialised within a process; two processes writing at once could lose one's change (the embedded
mode runs one process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import threading
from pathlib import Path

from calsync import logs
from calsync.state.store import DEFAULT_CONNECTION, StoreError, TokenStore

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


class FileTokenStore(TokenStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        with self._lock:
            token = self._read().get(connection)
        logs.register_secret(token)
        return token

    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        logs.register_secret(token)
        with self._lock:
            data = self._read()
            data[connection] = token
            self._write(data)

    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        with self._lock:
            data = self._read()
            if connection in data:
                del data[connection]
                self._write(data)  # rewritten, not edited: the old bytes go with the replaced file

    # -- internals ------------------------------------------------------------------------------------
    def _read(self) -> dict[str, str]:
        try:
            with self.path.open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                raw = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read the token file {self.path}: {exc.strerror}") from None
        if stat.S_IMODE(mode) & 0o077:
            # Someone widened it (or made it by hand); the next write restores 0600.
            log.warning("the token file is readable by others", extra=logs.fields(path=str(self.path)))
        if not raw.strip():
            return {}  # e.g. made with `touch`: nothing stored yet
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:  # also UnicodeDecodeError
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in data.items()
        ):
            # ``from None`` and no excerpt: the content may be a token.
            raise StoreError(
                f"the token file {self.path} is corrupt (expected a JSON object of connection: token); "
                "remove it and connect Google again"
            ) from None
        return data

    def _write(self, data: dict[str, str]) -> None:
        directory = self.path.parent
        tmp = directory / f".{self.path.name}.{secrets.token_hex(8)}.tmp"
        try:
            self._make_directory(directory)
            flags = (
                os.O_WRONLY
                | os.O_CREAT
                | os.O_EXCL
                | getattr(os, "O_CLOEXEC", 0)
                | getattr(os, "O_NOFOLLOW", 0)
            )
            fd = os.open(tmp, flags, FILE_MODE)
            try:
                with os.fdopen(fd, "wb") as handle:
                    if hasattr(os, "fchmod"):
                        os.fchmod(handle.fileno(), FILE_MODE)  # exactly 0600, whatever the umask took away
                    handle.write(json.dumps(data, sort_keys=True).encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._sync_directory(directory)
        except OSError as exc:
            raise StoreError(f"cannot write the token file {self.path}: {exc.strerror}") from None

    @staticmethod
    def _make_directory(directory: Path) -> None:
        if directory.is_dir():
            return
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            return  # made meanwhile by someone else: theirs to set up
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask; make it exactly 0700

    @staticmethod
    def _sync_directory(directory: Path) -> None:
        """Make the rename durable (POSIX); where directories cannot be opened this is skipped."""
        with contextlib.suppress(OSError):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
