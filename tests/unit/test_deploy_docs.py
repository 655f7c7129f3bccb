"""The docs work as written. Every ``calsync ...`` command in the code blocks of README.md and docs/*.md
parses with the real argument parser, and the README lists every command. docs/DEPLOY.md uses real flags and
variable names, the consent scopes the code asks for, and an order without circles (infra with a placeholder
token -> Directus setup -> its token into Secret Manager -> restart -> connect Google)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from calsync.cli import SETUP_OPTIONS, build_parser
from calsync.web.oauth import SCOPES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")


DOCS = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in
        [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}  # fmt: skip


def shell_commands(markdown: str, language: str = "sh") -> list[str]:
    """The lines of the code blocks (```sh ones by default, every one with ``language=""``) in document
    order, continuation lines (ending in ``\\``) joined, indented blocks (in list items) included."""
    info = re.escape(language) if language else r"[^\n]*"
    blocks = re.findall(rf"^[ \t]*```{info}\n(.*?)^[ \t]*```", markdown, flags=re.DOTALL | re.MULTILINE)
    return [line.strip() for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]


COMMANDS = shell_commands(DEPLOY)
# `calsync` (or .venv/bin/calsync) as a command word, up to a comment or the end of a shell command
CALSYNC_COMMAND = re.compile(r"(?:^|(?<=[\s;&|(]))(?:[\w./-]*/)?calsync(\s[^#;&|)]*)?(?=$|\s#|[;&|)])")


def calsync_commands(markdown: str) -> list[str]:
    """The argument lists of every ``calsync`` command in the document's code blocks. ``[--flag VALUE]``
    (a synopsis's optional part) counts as written; ``A | B`` alternatives are not used in the docs."""
    found = []
    for line in shell_commands(markdown, language=""):
        code = re.sub(r"(^|\s)#.*$", "", line)  # a shell comment may name calsync too
        for match in CALSYNC_COMMAND.finditer(code):
            found.append(" ".join((match.group(1) or "").replace("[", " ").replace("]", " ").split()))
    return found


def parse(arguments: str) -> str | None:
    """None if the real parser accepts the arguments, else argparse's message."""

    class Refused(Exception):
        pass

    def refuse(_parser: argparse.ArgumentParser, message: str) -> None:
        raise Refused(message)

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = refuse  # type: ignore[method-assign,assignment]
    try:
        build_parser().parse_args(shlex.split(arguments))
    except Refused as exc:
        return str(exc)
    except SystemExit as exc:  # --help, --version
        return None if exc.code == 0 else f"exit {exc.code}"
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]
    return None


def every_command(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """``serve``, ``sync``, ``directus setup``...: every runnable command of the parser."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += every_command(sub, f"{prefix}{name} ") or [f"{prefix}{name}"]
    return found


@pytest.mark.parametrize("document", sorted(DOCS))
def test_every_documented_calsync_command_parses(document: str) -> None:
    commands = calsync_commands(DOCS[document])
    if document in ("README.md", "docs/DEPLOY.md"):
        assert commands, f"{document} shows no calsync command in a code block"
    refused = {command: parse(command) for command in commands}
    assert not {c: why for c, why in refused.items() if why}, f"{document}: commands the parser refuses"


def test_the_command_extraction_sees_flags_continuations_and_comments() -> None:
    text = "```\n.venv/bin/calsync directus setup --a 1 \\\n   --b 2   # note --c\nx && calsync sync\n```\n"
    assert calsync_commands(text) == ["directus setup --a 1 --b 2", "sync"]
    assert parse("directus setup --no-such-flag") and parse("no-such-command")
    assert parse("serve --host 127.0.0.1 --port 8080") is None


def test_the_readme_lists_every_command_and_where_calsync_is() -> None:
    readme = DOCS["README.md"]
    section = readme[readme.index("## Command line") :]
    section = section[: section.index("\n## ", 1)]
    listed = [c.split() for c in calsync_commands(section)]
    for command in every_command(build_parser()):
        words = command.split()
        assert any(shown[: len(words)] == words for shown in listed), f"README's Command line lacks {command}"
    assert ".venv/bin/calsync" in section, "say where the command is installed"


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
