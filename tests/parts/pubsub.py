"""The real Pub/Sub emulator as a test part (pytest plugin: list it in ``pytest_plugins``).

One emulator per test session, started with its own launcher (``cloud-pubsub-emulator``, a shell script that
becomes a java process) on a free port of 127.0.0.1, and driven over its REST API. There is no reset
endpoint: each test makes topics and subscriptions of its own (``unique()`` names them) and deletes them.

What it does as Pub/Sub does (tried): push subscriptions deliver to a local HTTP endpoint within ~0.15 s,
one or two at a time; a status other than 102/200/201/202/204 is a nack, redelivered after the retry
policy's backoff; after ``maxDeliveryAttempts`` the message goes to the dead-letter topic with
``CloudPubSubDeadLetterSource*`` attributes. What it does not: it sends no Authorization header although it
accepts an ``oidcToken`` in the push config (production's token is checked by Cloud Run), and its envelope
carries no ``deliveryAttempt``.

Fixture ``pubsub_emulator`` (session): ``.host``, ``.project``, ``.env()`` (PUBSUB_EMULATOR_HOST,
GOOGLE_CLOUD_PROJECT), ``.topic(name)``, ``.push_subscription(...)``, ``.pull_subscription(...)``,
``.pull(subscription)``, ``.delete(path)``, ``.started_in`` (seconds to ready).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.parts.availability import part_unavailable
from tests.parts.processes import free_port, sdk_file, start_until_ready, stop_group

PROJECT = "calsync-test"
START_TIMEOUT = 90.0  # ~1-2 s on an idle machine; much slower on a busy 2-core CI box
_LAUNCHER = Path("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")


def unique(prefix: str) -> str:
    """A topic or subscription name no other test uses (names start with a letter, >= 3 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class PubSubEmulator:
    host: str
    project: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_in: float = 0.0  # seconds from launch to the first answer of GET /

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host, "GOOGLE_CLOUD_PROJECT": self.project}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.request(method, f"{self.base_url}/v1/{path}", json=body, timeout=30)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text[:300]}"
        answer: dict[str, Any] = response.json() if response.content else {}
        return answer

    def topic(self, name: str) -> str:
        """Create a topic; its full name."""
        path = f"projects/{self.project}/topics/{name}"
        self.call("PUT", path, {})
        return path

    def push_subscription(
        self,
        name: str,
        topic: str,
        endpoint: str,
        *,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
        minimum_backoff: str = "0.2s",
        maximum_backoff: str = "1s",
        ack_deadline_seconds: int = 60,
    ) -> str:
        """A push subscription to ``endpoint`` with an OIDC token configured as in terraform/pubsub.tf."""
        body: dict[str, Any] = {
            "topic": topic,
            "ackDeadlineSeconds": ack_deadline_seconds,
            "pushConfig": {
                "pushEndpoint": endpoint,
                "oidcToken": {
                    "serviceAccountEmail": "push@calsync-test.iam.gserviceaccount.com",
                    "audience": endpoint,
                },
            },
            "retryPolicy": {"minimumBackoff": minimum_backoff, "maximumBackoff": maximum_backoff},
        }
        if dead_letter_topic is not None:
            body["deadLetterPolicy"] = {
                "deadLetterTopic": dead_letter_topic,
                "maxDeliveryAttempts": max_delivery_attempts,
            }
        path = f"projects/{self.project}/subscriptions/{name}"
        self.call("PUT", path, body)
        return path

    def pull_subscription(self, name: str, topic: str) -> str:
        path = f"projects/{self.project}/subscriptions/{name}"
        self.call("PUT", path, {"topic": topic})
        return path

    def pull(self, subscription: str, max_messages: int = 100) -> list[dict[str, Any]]:
        """The messages waiting on a pull subscription, acknowledged."""
        answer = self.call("POST", f"{subscription}:pull", {"maxMessages": max_messages,
                                                             "returnImmediately": True})  # fmt: skip
        received: list[dict[str, Any]] = answer.get("receivedMessages", [])
        if received:
            self.call("POST", f"{subscription}:acknowledge", {"ackIds": [m["ackId"] for m in received]})
        return [m["message"] for m in received]

    def delete(self, path: str) -> None:
        requests.delete(f"{self.base_url}/v1/{path}", timeout=30)

    def stop(self) -> None:
        """Stop the launcher and its java process: they share the process group we gave them."""
        stop_group(self.process)


def start_emulator(launcher: Path, log_dir: Path) -> PubSubEmulator:
    """Start one emulator on a free port and wait for `GET /` to answer Ok; raise RuntimeError if not."""
    port = free_port()
    host = f"127.0.0.1:{port}"

    def ready() -> bool:
        try:
            response = requests.get(f"http://{host}/", timeout=2)
        except requests.RequestException:
            return False
        return response.status_code == 200 and response.text.strip() == "Ok"

    log_path = log_dir / f"pubsub-emulator-{port}.log"
    command = [str(launcher), "--host=127.0.0.1", f"--port={port}"]
    process, started_in = start_until_ready(command, log_path, ready, START_TIMEOUT)
    return PubSubEmulator(host, PROJECT, process, log_path, started_in)


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    launcher = sdk_file(_LAUNCHER)
    if launcher is None:
        part_unavailable(
            "Pub/Sub emulator", "no cloud-pubsub-emulator launcher (Debian google-cloud-cli-pubsub-emulator)"
        )
    if shutil.which(os.environ.get("JAVA", "java")) is None:
        part_unavailable("Pub/Sub emulator", "no java on PATH (the emulator is a Java program)")
    with tempfile.TemporaryDirectory(prefix="calsync-pubsub-") as folder:
        try:
            emulator = start_emulator(launcher, Path(folder))
        except (OSError, RuntimeError) as exc:
            part_unavailable("Pub/Sub emulator", str(exc))
        print(f"\nPub/Sub emulator on {emulator.host}, ready in {emulator.started_in:.1f} s")
        try:
            yield emulator
        finally:
            emulator.stop()
