"""cloudbuild.yaml: named steps on pinned images, tests before anything is deployed, apply only on one branch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# registry/path:tag or registry/path@sha256:digest (optionally both); "latest" is not a pin.
PINNED = re.compile(
    r"^[a-z0-9.\-/:]+?(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}))?(?:@sha256:[0-9a-f]{64})?$"
)


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def steps(build: dict[str, Any]) -> list[dict[str, Any]]:
    return list(build["steps"])


def by_id(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in steps}


def text_of(step: dict[str, Any]) -> str:
    if "script" in step:
        return str(step["script"])
    return " ".join(str(arg) for arg in step.get("args", []))


def ancestors(steps: list[dict[str, Any]], step_id: str) -> set[str]:
    """Every step that must finish before ``step_id`` starts (Cloud Build: no waitFor = all earlier steps)."""
    index = [step["id"] for step in steps].index(step_id)
    step = steps[index]
    direct = step.get("waitFor")
    parents = [s["id"] for s in steps[:index]] if direct is None else [d for d in direct if d != "-"]
    result = set(parents)
    for parent in parents:
        result |= ancestors(steps, parent)
    return result


def test_every_step_has_a_unique_id(steps: list[dict[str, Any]]) -> None:
    ids = [step.get("id") for step in steps]
    assert all(isinstance(i, str) and i for i in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_images_are_pinned(steps: list[dict[str, Any]]) -> None:
    for step in steps:
        image = step["name"]
        match = PINNED.match(image)
        assert match, f"{step['id']}: unparsable image {image!r}"
        assert match["tag"] or "@sha256:" in image, f"{step['id']}: {image} has neither tag nor digest"
        assert match["tag"] != "latest" and "latest" not in (match["tag"] or ""), f"{step['id']}: {image}"
        assert not image.endswith(":stable"), f"{step['id']}: {image} floats"


def test_the_pipeline_has_its_stages(steps: list[dict[str, Any]]) -> None:
    ids = set(by_id(steps))
    assert {"install", "lint", "test", "bundle", "tf-init", "tf-plan", "tf-apply"} <= ids


def test_lint_typechecks_and_checks_generated_files(steps: list[dict[str, Any]]) -> None:
    lint = text_of(by_id(steps)["lint"])
    for command in (
        "ruff check",
        "ruff format --check",
        "mypy",
        "gen_requirements.py --check",
        "terraform fmt -check",
    ):
        assert command in lint, command


def test_tests_and_bundle_run_before_anything_is_deployed(steps: list[dict[str, Any]]) -> None:
    for deploying in ("tf-plan", "tf-apply"):
        before = ancestors(steps, deploying)
        assert {"install", "lint", "test", "bundle", "tf-init"} <= before, (deploying, before)
    assert "tf-plan" in ancestors(steps, "tf-apply")
    assert "pytest" in text_of(by_id(steps)["test"])


def test_state_backend_comes_from_substitutions(build: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    init = text_of(by_id(steps)["tf-init"])
    assert "terraform" in init and " init " in init
    assert "bucket=$_TF_STATE_BUCKET" in init
    assert "_TF_STATE_BUCKET" in build["substitutions"]
    assert all(name.startswith("_") for name in build["substitutions"]), "user substitutions start with _"


def test_apply_is_gated_on_the_deploy_branch(build: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    apply = text_of(by_id(steps)["tf-apply"])
    gate = apply.find('if [ "$BRANCH_NAME" != "$_DEPLOY_BRANCH" ]')
    assert gate != -1, "tf-apply must compare BRANCH_NAME with _DEPLOY_BRANCH"
    assert "exit 0" in apply[gate:]
    assert gate < apply.find("apply -input=false"), "the branch check must come before terraform apply"
    assert build["substitutions"]["_DEPLOY_BRANCH"] == "main"
    # Scripts see substitutions as environment variables only with automapSubstitutions.
    assert build["options"]["automapSubstitutions"] is True
    # The plan that apply runs is the one made (and logged) in the previous step.
    assert "tfplan" in apply and "-out=tfplan" in text_of(by_id(steps)["tf-plan"])
    only_apply = [s["id"] for s in steps if re.search(r"terraform\S*\s.*\bapply\b", text_of(s))]
    assert only_apply == ["tf-apply"], only_apply


def test_logging_option_allows_a_dedicated_service_account(build: dict[str, Any]) -> None:
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
