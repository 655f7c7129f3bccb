"""TokenStore in a local file: the embedded default (``TOKEN_STORE=file:///path``).

The file holds ``{connection: refresh_token}`` as JSON and is created with mode 0600 from the first byte
(written to a private temporary file, then renamed over the old one), in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from calsync.store import DEFAULT_CONNECTION, StoreError, TokenStore


class FileTokenStore(TokenStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read the token file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            # Never echo the content: it may be a token.
            raise StoreError(f"the token file {self.path} is corrupt; delete it and connect Google again")
        return data

    def _write(self, data: dict[str, str]) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".token-", dir=self.path.parent)  # created 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"cannot write the token file {self.path}: {exc.strerror}") from None

    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        with self._lock:
            return self._read().get(connection)

    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        with self._lock:
            data = self._read()
            data[connection] = token
            self._write(data)

    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        with self._lock:
            data = self._read()
            if data.pop(connection, None) is not None:
                self._write(data)
