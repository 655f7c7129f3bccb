"""terraform/: what stands in for `terraform validate` here (the google provider cannot be downloaded).

`terraform fmt -check`, checkov (from its own environment, .cache/iac, built from the lock's ``iac`` group) and
structural checks over the parsed HCL (python-hcl2): identities, invokers, secret IAM, bucket, Firestore, env.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest

from calsync.settings import Settings
from tests.parts.availability import part_unavailable

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
FUNCTIONS = {"booking_hook", "calendar_import", "oauth_callback"}
IAC_RECIPE = (
    "uv export --frozen --only-group iac --no-emit-project --no-hashes --no-header --format requirements-txt "
    "-o .cache/iac-requirements.txt && uv venv .cache/iac && "
    "uv pip install --python .cache/iac/bin/python -r .cache/iac-requirements.txt"
)


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and labels: '"x"' -> 'x'; recurse into containers."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if not str(k).startswith("__")}
    return value


@dataclass
class Config:
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}

    def all_resources(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for (kind, name), body in self.resources.items():
            yield kind, name, body


@pytest.fixture(scope="module")
def tf() -> Config:
    config = Config()
    for path in sorted(TERRAFORM.glob("*.tf")):
        config.text[path.name] = path.read_text(encoding="utf-8")
        with path.open(encoding="utf-8") as handle:
            parsed = unquote(hcl2.load(handle))
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    assert (kind, name) not in config.resources, f"duplicate {kind}.{name}"
                    config.resources[(kind, name)] = body
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    config.data[(kind, name)] = body
        for block in parsed.get("locals", []):
            config.locals.update(block)
        for block in parsed.get("variable", []):
            config.variables.update(block)
        for block in parsed.get("output", []):
            config.outputs.update(block)
        config.terraform += parsed.get("terraform", [])
    return config


def one(blocks: Any) -> dict[str, Any]:
    """A nested block parsed as a one-element list."""
    assert isinstance(blocks, list) and len(blocks) == 1, blocks
    assert isinstance(blocks[0], dict)
    return blocks[0]


# --- tools ------------------------------------------------------------------------------------------


def test_terraform_fmt_is_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        part_unavailable("terraform", "install terraform >= 1.5 (only `fmt` is used: no provider download)")
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{result.stdout}"


@pytest.mark.slow
def test_checkov_finds_nothing_and_every_skip_is_justified() -> None:
    checkov = os.environ.get("CHECKOV") or str(ROOT / ".cache/iac/bin/checkov")
    if not Path(checkov).is_file():
        part_unavailable("checkov", f"build its environment (`make iac`, i.e. {IAC_RECIPE})")
    result = subprocess.run(
        [checkov, "-d", str(TERRAFORM), "--framework", "terraform", "--skip-download", "--compact", "--quiet",
         "--output", "json"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, "\n".join(f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed)
    assert result.returncode == 0, result.stderr[-2000:]
    for r in reports:
        for check in r.get("results", {}).get("skipped_checks", []):
            comment = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(comment) >= 30 and comment != "No comment provided", (
                f"unjustified skip {check['check_id']}"
            )


def test_inline_skips_carry_a_reason(tf: Config) -> None:
    for name, text in tf.text.items():
        for match in re.finditer(r"#\s*checkov:skip=([^\n]*)", text):
            check_id, _, reason = match[1].partition(":")
            assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", check_id), f"{name}: {match[0]}"
            assert len(reason.strip()) >= 30, f"{name}: skip {check_id} needs a real reason"


# --- providers and variables ------------------------------------------------------------------------


def test_providers_are_pinned_exactly(tf: Config) -> None:
    required = {}
    for block in tf.terraform:
        for providers in block.get("required_providers", []):
            required.update(providers)
    assert required["google"]["source"] == "hashicorp/google"
    for name in ("google", "archive"):
        assert re.fullmatch(r"= ?\d+\.\d+\.\d+", required[name]["version"]), (name, required[name])
    assert required["google"]["version"].lstrip("= ").startswith("6.")


def test_variables_are_typed_described_and_validated(tf: Config) -> None:
    for name, variable in tf.variables.items():
        assert "type" in variable, f"variable {name} has no type"
        assert variable.get("description"), f"variable {name} has no description"
    for name in ("project_id", "region", "directus_url", "google_client_id", "calendar_id", "timezone",
                 "schedule", "functions"):  # fmt: skip
        assert name in tf.variables, name
        assert tf.variables[name].get("validation"), f"variable {name} is not validated"
    assert "object(" in str(tf.variables["functions"]["type"])
    example = (TERRAFORM / "terraform.tfvars.example").read_text(encoding="utf-8")
    for name in re.findall(r"^([a-z_]+)\s*=", example, flags=re.MULTILINE):
        assert name in tf.variables, f"terraform.tfvars.example sets unknown variable {name}"


def test_apis_are_enabled(tf: Config) -> None:
    apis = str(tf.resources[("google_project_service", "main")]["for_each"])
    for api in ("cloudfunctions", "run", "cloudbuild", "artifactregistry", "secretmanager", "firestore",
                "cloudscheduler", "calendar-json"):  # fmt: skip
        assert f"{api}.googleapis.com" in apis, api


# --- functions and identities -----------------------------------------------------------------------


def test_locals_list_exactly_the_repositorys_functions(tf: Config) -> None:
    assert set(tf.locals["functions"]) == FUNCTIONS
    assert {p.name for p in (ROOT / "functions").iterdir() if (p / "main.py").is_file()} == FUNCTIONS


def test_every_function_runs_python312_as_its_own_service_account(tf: Config) -> None:
    function = tf.resources[("google_cloudfunctions2_function", "main")]
    accounts = tf.resources[("google_service_account", "function")]
    assert function["for_each"] == accounts["for_each"] == "${local.functions}"
    build = one(function["build_config"])
    service = one(function["service_config"])
    assert build["runtime"] == "python312"
    assert build["entry_point"] == "${each.key}"
    assert service["service_account_email"] == "${google_service_account.function[each.key].email}"
    for setting in ("timeout_seconds", "available_memory", "max_instance_count"):
        assert "var.functions[each.key]" in str(service[setting]), setting
    # Nobody else runs as a function's identity: the scheduler and the builder have their own.
    for name in ("scheduler", "builder"):
        assert ("google_service_account", name) in tf.resources
    scheduler = one(tf.resources[("google_cloud_scheduler_job", "import")]["http_target"])
    assert "google_service_account.scheduler" in one(scheduler["oidc_token"])["service_account_email"]
    assert "google_service_account.builder" in build["service_account"]


def test_source_objects_are_named_by_content_hash(tf: Config) -> None:
    archive = tf.data[("archive_file", "source")]
    assert archive["source_dir"] == "${path.module}/../build/${each.key}"
    obj = tf.resources[("google_storage_bucket_object", "source")]
    assert re.search(r"data\.archive_file\.source\[each\.key\]\.output_(sha256|md5|sha512)", obj["name"])
    storage = one(one(one(tf.resources[("google_cloudfunctions2_function", "main")]["build_config"])["source"])
                  ["storage_source"])  # fmt: skip
    assert storage["object"] == "${google_storage_bucket_object.source[each.key].name}"


def test_source_bucket_is_private_uniform_and_versioned(tf: Config) -> None:
    bucket = tf.resources[("google_storage_bucket", "sources")]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert one(bucket["versioning"])["enabled"] is True


def test_environment_is_the_products_contract(tf: Config) -> None:
    environment = str(tf.locals["environment"])
    names = set(re.findall(r"\b([A-Z][A-Z_]+)\b", environment))
    names |= {secret["env"] for secret in tf.locals["secrets"].values() if secret["env"]}
    known = {name.upper() for name in Settings.model_fields}
    assert names <= known, f"terraform sets variables calsync does not read: {sorted(names - known)}"
    for required in ("STORE", "TOKEN_STORE", "GOOGLE_CLIENT_ID", "GOOGLE_REDIRECT_URI", "GOOGLE_CALENDAR_ID",
                     "DIRECTUS_URL", "DIRECTUS_PUBLIC_URL", "DIRECTUS_COLLECTION", "TIMEZONE",
                     "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLIENT_SECRET", "WEBHOOK_SECRET", "CONNECT_KEY",
                     "DIRECTUS_TOKEN"):  # fmt: skip
        assert required in names, required
    assert "firestore" in str(tf.locals["store"])
    assert str(tf.locals["token_store"]).startswith("secretmanager://projects/${var.project_id}/secrets/")
    assert tf.locals["google_redirect_uri"].endswith("/callback")


# --- who may call what ------------------------------------------------------------------------------


def invoker_bindings(tf: Config) -> list[tuple[str, dict[str, Any]]]:
    kinds = ("google_cloud_run_v2_service_iam_member", "google_cloud_run_v2_service_iam_binding",
             "google_cloud_run_service_iam_member", "google_cloud_run_service_iam_binding",
             "google_cloudfunctions2_function_iam_member", "google_cloudfunctions2_function_iam_binding")  # fmt: skip
    return [(f"{kind}.{name}", body) for kind, name, body in tf.all_resources() if kind in kinds]


def test_calendar_import_is_invoked_only_by_the_scheduler(tf: Config) -> None:
    bindings = [
        (n, b) for n, b in invoker_bindings(tf) if '"calendar_import"' in str(b) or "calendar_import" in n
    ]
    assert bindings, "calendar_import needs an invoker binding for the scheduler"
    for name, body in bindings:
        members = str(body.get("member", "")) + str(body.get("members", ""))
        assert "allUsers" not in members and "allAuthenticatedUsers" not in members, name
        assert members == "serviceAccount:${google_service_account.scheduler.email}", name
        assert body["role"] == "roles/run.invoker"
    assert "roles/run.invoker" not in str(
        [b for k, _, b in tf.all_resources() if k.startswith("google_project_iam")]
    )


def test_public_functions_are_exactly_the_two_that_authenticate_in_code(tf: Config) -> None:
    public = {n for n, b in invoker_bindings(tf) if b.get("member") in ("allUsers", "allAuthenticatedUsers")}
    assert public == {"google_cloud_run_v2_service_iam_member.booking_hook_public",
                      "google_cloud_run_v2_service_iam_member.oauth_callback_public"}  # fmt: skip
    text = tf.text["service_accounts.tf"]
    for name in ("booking_hook_public", "oauth_callback_public"):
        preamble = text[: text.index(f'"{name}"')].rsplit("\n\n", 1)[-1]
        assert "authenticates in code" in preamble, f"{name}: say why it is public and how it authenticates"


def test_scheduler_uses_an_oidc_token_for_the_function_uri(tf: Config) -> None:
    job = tf.resources[("google_cloud_scheduler_job", "import")]
    target = one(job["http_target"])
    oidc = one(target["oidc_token"])
    uri = '${google_cloudfunctions2_function.main["calendar_import"].service_config[0].uri}'
    assert target["uri"] == uri
    assert oidc["audience"] == uri
    assert "oauth_token" not in target
    assert target["http_method"] == "POST"


# --- secrets ----------------------------------------------------------------------------------------


def test_secret_values_never_pass_through_terraform(tf: Config) -> None:
    assert not tf.of_type("google_secret_manager_secret_version")
    assert set(tf.locals["secrets"]) == {"google_client_secret", "webhook_secret", "connect_key", "directus_token",
                                         "refresh_token"}  # fmt: skip
    assert "sensitive" not in str(tf.variables), "no secret may be a variable"


def test_secret_iam_is_per_secret_and_least_privilege(tf: Config) -> None:
    for kind, name, body in tf.all_resources():
        if kind.startswith(("google_project_iam", "google_folder_iam", "google_organization_iam")):
            assert "secretmanager" not in str(body.get("role", "")), (
                f"{kind}.{name}: secret roles go on the secret"
            )
    secret_iam = tf.of_type("google_secret_manager_secret_iam_member")
    assert not tf.of_type("google_secret_manager_secret_iam_binding")
    assert not tf.of_type("google_secret_manager_secret_iam_policy")
    reader = secret_iam.pop("reader")
    assert reader["role"] == "roles/secretmanager.secretAccessor"
    assert 'concat(secrets, ["refresh_token"])' in tf.locals["secret_readers"]
    writer = secret_iam.pop("token_writer")
    assert set(re.findall(r"roles/[\w.]+", writer["for_each"])) == {"roles/secretmanager.secretVersionAdder",
                                       "roles/secretmanager.secretVersionManager"}  # fmt: skip
    assert writer["secret_id"] == '${google_secret_manager_secret.main["refresh_token"].secret_id}'
    assert writer["member"] == 'serviceAccount:${google_service_account.function["oauth_callback"].email}'
    assert not secret_iam, f"unexpected secret IAM: {sorted(secret_iam)}"
    env = tf.locals["secret_env"]
    assert set(env) == FUNCTIONS
    assert all("refresh_token" not in secrets for secrets in env.values()), (
        "the refresh token is not an env var"
    )
    assert "webhook_secret" in env["booking_hook"] and "connect_key" in env["oauth_callback"]
    assert "connect_key" not in env["booking_hook"] + env["calendar_import"]
    assert "webhook_secret" not in env["oauth_callback"] + env["calendar_import"]


def test_no_basic_roles_anywhere(tf: Config) -> None:
    for name, text in tf.text.items():
        assert not re.search(r"roles/(owner|editor|viewer)\b", text), name


# --- Firestore --------------------------------------------------------------------------------------


def test_firestore_is_native_with_ttl_on_oauth_states(tf: Config) -> None:
    database = tf.resources[("google_firestore_database", "main")]
    assert database["type"] == "FIRESTORE_NATIVE"
    ttl = tf.resources[("google_firestore_field", "oauth_state_ttl")]
    assert (ttl["collection"], ttl["field"]) == ("oauth_states", "expires_at")
    assert "ttl_config" in ttl
    assert ttl["database"] == "${google_firestore_database.main.name}"


def test_outputs_give_urls_redirect_uri_and_connect_link(tf: Config) -> None:
    for name in ("booking_hook_url", "calendar_import_url", "oauth_callback_url", "google_redirect_uri",
                 "connect_link"):  # fmt: skip
        assert name in tf.outputs, name
    assert tf.outputs["connect_link"]["value"].endswith("/start?key=")
    assert "secret" in tf.outputs["connect_link"]["description"].lower()


def test_every_reference_is_declared(tf: Config) -> None:
    """A slice of `terraform validate`: var., local., data. and resource references point at declarations."""
    expressions = str([tf.resources, tf.data, tf.locals, tf.variables, tf.outputs])
    for name in set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", expressions)):
        assert name in tf.variables, f"undeclared var.{name}"
    for name in set(re.findall(r"\blocal\.([a-z_][a-z0-9_]*)", expressions)):
        assert name in tf.locals, f"undeclared local.{name}"
    for kind, name in set(re.findall(r"\bdata\.([a-z][a-z0-9_]*)\.([a-z_][a-z0-9_]*)", expressions)):
        assert (kind, name) in tf.data, f"undeclared data.{kind}.{name}"
    for kind, name in set(re.findall(r"(?<![.\w])(google_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)", expressions)):
        assert (kind, name) in tf.resources, f"undeclared {kind}.{name}"
