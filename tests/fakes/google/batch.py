"""The multipart/mixed batch wire format: parts in, parts out, each part routed as its own call."""

from __future__ import annotations

import email
import email.message
import email.policy
import secrets
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from .errors import Headers, Reply, _error_reply
from .server import LoggedRequest

MAX_BATCH_PARTS = 1000


class BatchMixin:
    """``POST /batch/calendar/v3``."""

    def _batch(self, method: str, headers: Headers, body: bytes) -> Reply:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/mixed"):
            return _error_reply(400, "invalid", "Batch requests must be multipart/mixed.")
        message = email.message_from_bytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.compat32
        )
        parts = message.get_payload()
        if not isinstance(parts, list) or not parts:
            return _error_reply(400, "invalid", "Batch request contains no parts.")
        if len(parts) > MAX_BATCH_PARTS:
            return _error_reply(
                400, "invalid", f"A batch request may contain at most {MAX_BATCH_PARTS} calls."
            )
        boundary = "batch_" + secrets.token_hex(12)
        out: list[str] = []
        for part in parts:
            if not isinstance(part, email.message.Message):
                return _error_reply(400, "invalid", "Malformed batch part.")
            content_id = str(part.get("Content-ID", "")).strip()
            inner = (
                content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
            )
            payload = part.get_payload(decode=False)
            status, part_headers, part_body = self._batch_part(str(payload))
            lines = [
                f"--{boundary}",
                "Content-Type: application/http",
                f"Content-ID: <response-{inner}>",
                "",
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                *(f"{k}: {v}" for k, v in part_headers.items()),
                f"Content-Length: {len(part_body)}",
                "",
                part_body.decode(),
            ]
            out.append("\r\n".join(lines) + "\r\n")
        out.append(f"--{boundary}--\r\n")
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, "".join(out).encode()

    def _batch_part(self, payload: str) -> Reply:
        normalized = payload.replace("\r\n", "\n")
        head, _, part_body = normalized.partition("\n\n")
        lines = head.split("\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return _error_reply(400, "invalid", "Malformed batch part.")
        part_headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                part_headers[name.strip().lower()] = value.strip()
        split = urlsplit(target)
        path = unquote(split.path)
        method = method.upper()
        fault = self._take_fault(method, path, split.query, part=True)
        if fault is not None:
            reply = self._fault_reply(fault, path)
        else:
            reply = self._route(method, path, split.query, part_headers, part_body.rstrip("\n").encode())
        self._record(LoggedRequest(method, path, split.query, reply[0], False, True))
        return reply
