"""docs/DEPLOY.md works as written: real flags and variable names, the consent scopes the code
asks for, and an order without circles (infra with a placeholder token -> Directus setup -> its token into
Secret Manager -> restart -> connect Google)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from calsync.cli import SETUP_OPTIONS, build_parser
from calsync.web.oauth import SCOPES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ```sh blocks in document order, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]


COMMANDS = shell_commands(DEPLOY)


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError(f"no sub-command {name}")


def first(predicate_text: str) -> int:
    """Index of the first command containing the text."""
    for index, command in enumerate(COMMANDS):
        if predicate_text in command:
            return index
    pytest.fail(f"docs/DEPLOY.md runs no command containing {predicate_text!r}")


def test_directus_setup_uses_only_real_flags() -> None:
    setup = subparser(subparser(build_parser(), "directus"), "setup")
    real = {option for action in setup._actions for option in action.option_strings}
    uses = [c for c in COMMANDS if re.search(r"calsync directus setup\b", c)]
    assert uses, "DEPLOY.md must run calsync directus setup"
    for command in uses:
        for flag in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", command.split("calsync directus setup", 1)[1]):
            assert flag in real, f"{flag} is not a flag of calsync directus setup ({sorted(real)})"
    mentioned = set(re.findall(r"`(--[a-z][a-z-]*)`", DEPLOY[DEPLOY.index("## 7. Directus") :]))
    assert not {"--hook-url"} & (mentioned | {f for c in uses for f in c.split()}), (
        "the flag is --booking-hook-url"
    )


def test_directus_setup_gets_every_setting_from_its_environment_names() -> None:
    setup = first("calsync directus setup")
    exported = {
        name
        for command in COMMANDS[:setup]
        for name in re.findall(r"(?:^|\s)(?:export\s+)?([A-Z][A-Z0-9_]*)=", command)
    }
    wanted = {env for env, _help in SETUP_OPTIONS.values()}
    assert wanted <= exported, f"not set before setup: {sorted(wanted - exported)}"
    # The admin token is setup's own variable; DIRECTUS_TOKEN is the functions' (the sync user's) token.
    assert "DIRECTUS_ADMIN_TOKEN" in exported
    assert not any(re.search(r"\bDIRECTUS_TOKEN=", c) for c in COMMANDS[:setup]), (
        "the admin token is not DIRECTUS_TOKEN"
    )


def test_the_order_has_no_circle() -> None:
    placeholder = first("gcloud secrets versions add calsync-directus-token")
    deploy = next((i for i, c in enumerate(COMMANDS) if c == "terraform -chdir=terraform apply"), -1)
    setup = first("calsync directus setup")
    stored = [i for i, c in enumerate(COMMANDS) if "gcloud secrets versions add calsync-directus-token" in c]
    restart = first("gcloud run services update")
    connect = first("output -raw connect_link")
    assert "placeholder" in COMMANDS[placeholder], "the first Directus token version is a placeholder"
    assert deploy != -1, "step 6 applies everything: terraform -chdir=terraform apply"
    assert placeholder < deploy < setup, "infra (with placeholder secrets) before Directus setup"
    assert len(stored) == 2 and setup < stored[1] < restart, "the printed sync token is stored after setup"
    assert "printed" in COMMANDS[stored[1]]
    assert restart < connect, "Google is connected last, when Directus and the secrets are ready"
    assert "--revision-suffix" in COMMANDS[restart], "a new revision makes new instances read the new version"


def test_consent_screen_lists_the_scopes_the_code_requests() -> None:
    consent = DEPLOY[DEPLOY.index("## 2. OAuth consent screen") : DEPLOY.index("## 3. OAuth client")]
    for scope in SCOPES:
        assert f"`{scope}`" in consent, scope
