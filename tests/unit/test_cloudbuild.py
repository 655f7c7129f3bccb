"""Cloud Build: a check build that cannot deploy, and a deploy build that runs the same checks first.

cloudbuild.yaml runs on every branch as a service account with no project roles: a branch can edit it, so
no step may need (or try) deploy rights. cloudbuild-deploy.yaml runs only on main, approved, as the deployer:
the same checks, then bundle, plan and apply. docs/DEPLOY.md creates both triggers and both accounts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK, DEPLOY = "cloudbuild.yaml", "cloudbuild-deploy.yaml"
# registry/path:tag or registry/path@sha256:digest (optionally both); "latest" is not a pin.
PINNED = re.compile(
    r"^[a-z0-9.\-/:]+?(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}))?(?:@sha256:[0-9a-f]{64})?$"
)
CHECK_STEPS = ["fetch-uv", "fetch-terraform", "install", "lint", "test", "bundle", "tf-check"]
# Anything that changes the project: terraform state, deploy commands, IAM, secrets, buckets.
DEPLOYING = re.compile(
    r"\bterraform\b[^\n]*\b(apply|plan|init|import|destroy|state|taint)\b"
    r"|\bgcloud\b[^\n]*\b(deploy|add-iam-policy-binding|set-iam-policy|secrets|create|update|delete)\b"
    r"|\bgcloud\s+storage\s+(cp|mv|rm|rsync)\b|\bgsutil\b|\bcurl\b|\bwget\b"
)


def load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), name
    return loaded


@pytest.fixture(scope="module")
def check() -> dict[str, Any]:
    return load(CHECK)


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    assert (ROOT / DEPLOY).is_file(), f"{DEPLOY} is the only file that deploys"
    return load(DEPLOY)


def by_id(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in build["steps"]}


def text_of(step: dict[str, Any]) -> str:
    if "script" in step:
        return str(step["script"])
    return " ".join([str(step.get("entrypoint", "")), *(str(arg) for arg in step.get("args", []))])


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


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ```sh blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", markdown, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]


# --- both files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [CHECK, DEPLOY])
def test_every_step_has_a_unique_id(name: str) -> None:
    ids = [step.get("id") for step in load(name)["steps"]]
    assert all(isinstance(i, str) and i for i in ids), ids
    assert len(set(ids)) == len(ids), ids


@pytest.mark.parametrize("name", [CHECK, DEPLOY])
def test_images_are_pinned(name: str) -> None:
    for step in load(name)["steps"]:
        image = step["name"]
        match = PINNED.match(image)
        assert match, f"{step['id']}: unparsable image {image!r}"
        assert match["tag"] or "@sha256:" in image, f"{step['id']}: {image} has neither tag nor digest"
        assert match["tag"] != "latest" and "latest" not in (match["tag"] or ""), f"{step['id']}: {image}"
        assert not image.endswith(":stable"), f"{step['id']}: {image} floats"


@pytest.mark.parametrize("name", [CHECK, DEPLOY])
def test_the_trigger_not_the_file_chooses_the_identity(name: str) -> None:
    """A branch could name the deployer in its build file; the identity belongs to the trigger."""
    build = load(name)
    assert "serviceAccount" not in build, f"{name}: set the service account on the trigger"
    assert "availableSecrets" not in build and "secretEnv" not in str(build["steps"]), name
    # User-specified service accounts need an explicit logging choice; scripts see substitutions as env.
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert build["options"]["automapSubstitutions"] is True
    assert all(name.startswith("_") for name in build.get("substitutions", {})), "user substitutions start _"


# --- the check build (every branch and pull request) ------------------------------------------------


def test_check_build_has_exactly_the_check_stages(check: dict[str, Any]) -> None:
    assert [step["id"] for step in check["steps"]] == CHECK_STEPS


def test_lint_typechecks_and_checks_generated_files(check: dict[str, Any]) -> None:
    lint = text_of(by_id(check)["lint"])
    for command in ("ruff check", "ruff format --check", "mypy", "gen_requirements.py --check"):
        assert command in lint, command
    assert "pytest" in text_of(by_id(check)["test"])
    assert "scripts/bundle.py" in text_of(by_id(check)["bundle"])


def test_terraform_is_checked_without_credentials(check: dict[str, Any]) -> None:
    tf_check = text_of(by_id(check)["tf-check"])
    assert "terraform fmt -check -recursive terraform" in tf_check
    assert re.search(r"checkov -d terraform .*--skip-download", tf_check)


def test_no_step_of_the_check_build_can_deploy(check: dict[str, Any]) -> None:
    for step in check["steps"]:
        found = DEPLOYING.search(text_of(step))
        assert not found, f"{step['id']} runs {found[0]!r}: deploying belongs in {DEPLOY}"
    assert "apply" not in str(check["steps"])
    # Nothing that would point it at the state: it never reads or writes it.
    for name in ("_TF_STATE_BUCKET", "_TF_STATE_PREFIX", "_DEPLOY_BRANCH"):
        assert name not in str(check), name


# --- the deploy build (main only) --------------------------------------------------------------------


def test_deploy_runs_the_same_checks_first(check: dict[str, Any], deploy: dict[str, Any]) -> None:
    assert deploy["steps"][: len(check["steps"])] == check["steps"], f"the first steps must equal {CHECK}'s"
    assert deploy["options"] == check["options"]
    assert deploy["substitutions"]["_PYTEST_MARKERS"] == check["substitutions"]["_PYTEST_MARKERS"]
    assert [s["id"] for s in deploy["steps"][len(check["steps"]) :]] == ["tf-vars", "tf-init", "tf-plan",
                                                                          "tf-apply"]  # fmt: skip


def test_tests_bundle_and_plan_come_before_apply(deploy: dict[str, Any]) -> None:
    steps = deploy["steps"]
    for deploying in ("tf-plan", "tf-apply"):
        before = ancestors(steps, deploying)
        assert {"install", "lint", "test", "bundle", "tf-check", "tf-init"} <= before, (deploying, before)
    assert "tf-plan" in ancestors(steps, "tf-apply")


def test_state_backend_comes_from_substitutions(deploy: dict[str, Any]) -> None:
    init = text_of(by_id(deploy)["tf-init"])
    assert "terraform" in init and " init " in init
    assert "bucket=$_TF_STATE_BUCKET" in init
    assert "_TF_STATE_BUCKET" in deploy["substitutions"]


def test_deploy_applies_the_logged_plan_on_main_only(deploy: dict[str, Any]) -> None:
    steps = deploy["steps"]
    apply = text_of(by_id(deploy)["tf-apply"])
    gate = apply.find('if [ "$BRANCH_NAME" != "$_DEPLOY_BRANCH" ]')
    assert gate != -1, "tf-apply must compare BRANCH_NAME with _DEPLOY_BRANCH"
    # Another branch reaching this step is an error (a hand-started run), not a quiet success.
    assert "exit 1" in apply[gate : apply.find("fi", gate)]
    assert gate < apply.find("apply -input=false"), "the branch check must come before terraform apply"
    assert deploy["substitutions"]["_DEPLOY_BRANCH"] == "main"
    # The plan that apply runs is the one made (and logged) in the previous step.
    assert "tfplan" in apply and "-out=tfplan" in text_of(by_id(deploy)["tf-plan"])
    only_apply = [s["id"] for s in steps if re.search(r"terraform\S*\s.*\bapply\b", text_of(s))]
    assert only_apply == ["tf-apply"], only_apply


# --- the triggers and accounts docs/DEPLOY.md creates ----------------------------------------------


@pytest.fixture(scope="module")
def commands() -> list[str]:
    return shell_commands((ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8"))


def trigger(commands: list[str], build_config: str) -> str:
    found = [c for c in commands if c.startswith("gcloud builds triggers create") and
             re.search(rf"--build-config={re.escape(build_config)}(\s|$)", c)]  # fmt: skip
    assert len(found) == 1, f"docs/DEPLOY.md must create one trigger for {build_config}: {found}"
    return found[0]


def test_docs_create_a_check_trigger_as_the_test_only_account(commands: list[str]) -> None:
    command = trigger(commands, CHECK)
    assert "calsync-ci@" in command and "calsync-deployer" not in command
    assert "--require-approval" not in command
    # Its account may write build logs and nothing else in the project.
    granted = [c for c in commands if "add-iam-policy-binding" in c and ("$CI_SA" in c or "calsync-ci@" in c)]
    assert granted, "docs/DEPLOY.md grants calsync-ci its one role"
    for grant in granted:
        assert "--role=roles/logging.logWriter" in grant, grant


def test_docs_create_an_approved_main_only_deploy_trigger(commands: list[str]) -> None:
    command = trigger(commands, DEPLOY)
    assert "calsync-deployer@" in command
    assert re.search(r"--branch-pattern=(['\"])\^main\$\1", command), (
        "anchored: a bare `main` matches any *main*"
    )
    assert "--require-approval" in command
    assert "--pull-request-pattern" not in command, "pull requests run unreviewed code: never as the deployer"
    assert "_TF_STATE_BUCKET=" in command


def test_docs_protect_main_and_explain_approval() -> None:
    text = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    assert "branch protection" in text.lower()
    assert "roles/cloudbuild.builds.approver" in text
    assert "gcloud beta builds approve" in text
