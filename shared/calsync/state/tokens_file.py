"""TokenStore in local files: the embedded default (``TOKEN_STORE=file:///path``).

One file per connection, each holding ``{connection: refresh_token}`` as JSON: the default connection's is
``path`` itself (today's file, so an installation from before connections keeps its token with nothing to
do), every other connection's lies beside it as ``<path>.<connection>`` (``refresh_token.alice``). One file
each, so a put or delete rewrites only that connection's token and a damaged file harms only its own.
Files of the first format held several connections in ``path``; such an entry is still read, and moves to
its own file on the next put (or goes on delete).

No file is readable by anyone else, not even for a moment: each write goes to a new temporary file in the
same directory, created with ``O_CREAT | O_EXCL`` and mode 0600 (a name nobody else can have pre-created or
linked), which then replaces the old file atomically (``os.replace``), so a reader sees the old content or
the new, never half of it. A missing directory is created 0700; an existing one is left as the user made it
(it may be the working directory). Errors name the file, never its content, which may be a token.

Writes are serialised within a process; two processes writing at once could lose one's change (the embedded
mode runs one process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
import threading
from pathlib import Path

from calsync import logs
from calsync.state.store import DEFAULT_CONNECTION, StoreError, TokenStore

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
# What may follow ``<path>.``: a connection id, never a path (no separator, no leading dot).
_FILE_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class FileTokenStore(TokenStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def path_for(self, connection: str) -> Path:
        """The file that holds this connection's token."""
        if connection == DEFAULT_CONNECTION:
            return self.path
        if not _FILE_SUFFIX.match(connection):
            raise StoreError(f"connection id {connection!r} cannot be part of a token file name")
        return self.path.with_name(f"{self.path.name}.{connection}")

    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        path = self.path_for(connection)
        with self._lock:
            token = self._read(path).get(connection)
            if token is None and path != self.path:
                token = self._legacy().get(connection)
        logs.register_secret(token)
        return token

    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        logs.register_secret(token)
        path = self.path_for(connection)
        with self._lock:
            data = self._read(path)
            data[connection] = token
            self._write(path, data)
            self._drop_legacy(path, connection)

    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        path = self.path_for(connection)
        with self._lock:
            data = self._read(path)
            if connection in data:
                del data[connection]
                if data or path == self.path:
                    self._write(path, data)  # rewritten, not edited: the old bytes go with the old file
                else:
                    self._remove(path)  # a removed connection leaves no file behind
            self._drop_legacy(path, connection)

    # -- internals ------------------------------------------------------------------------------------
    def _legacy(self) -> dict[str, str]:
        """The default file as the first format used it (every connection's token in it). A damaged
        default file is the default connection's problem, not another connection's: read as empty."""
        try:
            return self._read(self.path)
        except StoreError:
            return {}

    def _drop_legacy(self, path: Path, connection: str) -> None:
        """Once a connection has its own file, its entry in the first format's shared file goes."""
        if path == self.path:
            return
        legacy = self._legacy()
        if connection in legacy:
            del legacy[connection]
            self._write(self.path, legacy)

    def _read(self, path: Path) -> dict[str, str]:
        try:
            with path.open("rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                raw = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read the token file {path}: {exc.strerror}") from None
        if stat.S_IMODE(mode) & 0o077:
            # Someone widened it (or made it by hand); the next write restores 0600.
            log.warning("the token file is readable by others", extra=logs.fields(path=str(path)))
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
                f"the token file {path} is corrupt (expected a JSON object of connection: token); "
                "remove it and connect Google again"
            ) from None
        return data

    def _write(self, path: Path, data: dict[str, str]) -> None:
        directory = path.parent
        tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
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
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._sync_directory(directory)
        except OSError as exc:
            raise StoreError(f"cannot write the token file {path}: {exc.strerror}") from None

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot remove the token file {path}: {exc.strerror}") from None

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
