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
                "cloudscheduler", "calendar-json", "pubsub"):  # fmt: skip
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
    environment = str([tf.locals["environment"], tf.locals["function_environment"]])
    names = set(re.findall(r"\b([A-Z][A-Z_]+)\b", environment))
    names |= {secret["env"] for secret in tf.locals["secrets"].values() if secret["env"]}
    known = {name.upper() for name in Settings.model_fields}
    assert names <= known, f"terraform sets variables calsync does not read: {sorted(names - known)}"
    for required in ("STORE", "TOKEN_STORE", "GOOGLE_CLIENT_ID", "GOOGLE_REDIRECT_URI", "GOOGLE_CALENDAR_ID",
                     "DIRECTUS_URL", "DIRECTUS_PUBLIC_URL", "DIRECTUS_COLLECTION", "TIMEZONE",
                     "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLIENT_SECRET", "WEBHOOK_SECRET", "CONNECT_KEY",
                     "DIRECTUS_TOKEN", "ALLOWED_GOOGLE_ACCOUNTS", "SYNC_TICK_MINUTES"):  # fmt: skip
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


def test_calendar_import_is_invoked_only_by_the_scheduler_and_the_push_subscription(tf: Config) -> None:
    bindings = [
        (n, b) for n, b in invoker_bindings(tf) if '"calendar_import"' in str(b) or "calendar_import" in n
    ]
    assert bindings, "calendar_import needs an invoker binding for the scheduler"
    members = set()
    for name, body in bindings:
        member = str(body.get("member", "")) + str(body.get("members", ""))
        assert "allUsers" not in member and "allAuthenticatedUsers" not in member, name
        assert body["role"] == "roles/run.invoker"
        members.add(member)
    assert members == {"serviceAccount:${google_service_account.scheduler.email}",
                       "serviceAccount:${google_service_account.pubsub_push.email}"}  # fmt: skip
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


# --- sync requests on Pub/Sub -----------------------------------------------------------------------


CALENDAR_IMPORT_URI = '${google_cloudfunctions2_function.main["calendar_import"].service_config[0].uri}'


def test_sync_requests_are_pushed_to_calendar_import_with_an_oidc_token(tf: Config) -> None:
    topic = tf.resources[("google_pubsub_topic", "sync_requests")]
    assert topic["name"] == "${var.name_prefix}-sync-requests"
    subscription = tf.resources[("google_pubsub_subscription", "sync_requests")]
    assert subscription["topic"] == "${google_pubsub_topic.sync_requests.id}"
    push = one(subscription["push_config"])
    assert push["push_endpoint"] == CALENDAR_IMPORT_URI
    oidc = one(push["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.pubsub_push.email}"
    assert oidc["audience"] == CALENDAR_IMPORT_URI
    # Pub/Sub waits for a whole cycle (up to the function's timeout) before redelivering, within its 600 s.
    assert (
        subscription["ack_deadline_seconds"]
        == "${min(600, var.functions.calendar_import.timeout_seconds + 30)}"
    )
    assert one(subscription["expiration_policy"])["ttl"] == ""
    retry = one(subscription["retry_policy"])
    assert retry["minimum_backoff"] == "${var.sync_requests.minimum_backoff_seconds}s"
    assert retry["maximum_backoff"] == "${var.sync_requests.maximum_backoff_seconds}s"
    dead = one(subscription["dead_letter_policy"])
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.sync_requests_dead.id}"
    assert dead["max_delivery_attempts"] == "${var.sync_requests.max_delivery_attempts}"


def test_dead_letters_are_kept_and_the_service_agent_has_exactly_its_grants(tf: Config) -> None:
    kept = tf.resources[("google_pubsub_subscription", "sync_requests_dead")]
    assert kept["topic"] == "${google_pubsub_topic.sync_requests_dead.id}", "a topic alone drops messages"
    assert "push_config" not in kept and one(kept["expiration_policy"])["ttl"] == ""
    agent = "${local.pubsub_service_agent}"
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in tf.locals["pubsub_service_agent"]
    grants = {(kind, name): body for kind, name, body in tf.all_resources() if body.get("member") == agent}
    assert {(k, n, b["role"]) for (k, n), b in grants.items()} == {
        ("google_pubsub_topic_iam_member", "dead_letter_publisher", "roles/pubsub.publisher"),
        ("google_pubsub_subscription_iam_member", "dead_letter_subscriber", "roles/pubsub.subscriber"),
        ("google_service_account_iam_member", "pubsub_push_token_creator", "roles/iam.serviceAccountTokenCreator"),
    }  # fmt: skip
    assert grants[("google_pubsub_topic_iam_member", "dead_letter_publisher")]["topic"] == (
        "${google_pubsub_topic.sync_requests_dead.name}"
    )
    assert grants[("google_pubsub_subscription_iam_member", "dead_letter_subscriber")]["subscription"] == (
        "${google_pubsub_subscription.sync_requests.name}"
    )
    token = grants[("google_service_account_iam_member", "pubsub_push_token_creator")]
    assert token["service_account_id"] == "${google_service_account.pubsub_push.name}", "on that account only"


def test_only_the_three_functions_that_ask_for_syncs_publish_and_on_the_topic_alone(tf: Config) -> None:
    publishers = tf.of_type("google_pubsub_topic_iam_member")
    publisher = publishers.pop("sync_request_publisher")
    assert set(re.findall(r'"(\w+)"', tf.locals["sync_request_publishers"])) == {
        "booking_hook",
        "calendar_import",
        "oauth_callback",  # a new consent's first sync runs elsewhere, not in the instance that answered
    }
    assert publisher["topic"] == "${google_pubsub_topic.sync_requests.name}"
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "serviceAccount:${google_service_account.function[each.key].email}"
    assert set(publishers) == {"dead_letter_publisher"}
    for kind, name, body in tf.all_resources():
        if kind.startswith(("google_project_iam", "google_folder_iam", "google_organization_iam")):
            assert "pubsub" not in str(body.get("role", "")), (
                f"{kind}.{name}: Pub/Sub roles go on the resource"
            )
    environment = tf.locals["function_environment"]
    for function in ("booking_hook", "calendar_import", "oauth_callback"):
        assert "PUBSUB_TOPIC = google_pubsub_topic.sync_requests.id" in str(environment[function]) or (
            environment[function].get("PUBSUB_TOPIC") == "${google_pubsub_topic.sync_requests.id}"
        ), function
    # the cycle keeps the channels pointed at booking_hook's receiver (unless push is turned off)
    assert 'NOTIFICATION_URL = "${local.function_urls.booking_hook}/notifications"' in str(
        environment["calendar_import"]
    )


def test_calendar_import_cycles_at_once_stay_inside_googles_quotas(tf: Config) -> None:
    defaults = function_defaults(tf, "calendar_import")
    at_once = int(defaults["max_instances"]) * int(defaults["concurrency"])
    assert 1 < at_once <= 16, "16 cycles x 600 requests/min per user = 9,600 < 10,000 per project"
    assert "max_instances * var.functions.calendar_import.concurrency <= 16" in str(
        tf.variables["functions"]["validation"]
    )
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Push notifications and Pub/Sub") :]
    section = section[: section.index("\n## ", 1)]
    for figure in ("10,000", "600", "1,000", "9,600"):
        assert figure in section, f"the README shows the quota arithmetic ({figure})"


# --- secrets ----------------------------------------------------------------------------------------


def test_secret_values_never_pass_through_terraform(tf: Config) -> None:
    assert not tf.of_type("google_secret_manager_secret_version")
    assert set(tf.locals["secrets"]) == {"google_client_secret", "webhook_secret", "connect_key", "directus_token",
                                         "refresh_token"}  # fmt: skip
    assert "sensitive" not in str(tf.variables), "no secret may be a variable"


def test_secret_iam_is_per_secret_and_least_privilege(tf: Config) -> None:
    for kind, name, body in tf.all_resources():
        if kind.startswith(("google_project_iam", "google_folder_iam", "google_organization_iam")):
            if (kind, name) in {("google_project_iam_member", "token_reader"),
                                ("google_project_iam_member", "token_writer")}:  # fmt: skip
                continue  # further connections' token secrets: conditioned on their names (next test)
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


def test_further_connections_tokens_are_reachable_only_under_the_token_secrets_name(tf: Config) -> None:
    """Staff calendars: a connection's secret is made at its first consent, so its grants sit on the project,
    each conditioned on the name prefix of calsync's token secrets (with the project number, as Secret
    Manager names resources in IAM conditions)."""
    prefix = tf.locals["token_secret_prefix"]
    assert prefix == (
        "projects/${data.google_project.main.number}/secrets/${local.secrets.refresh_token.name}-"
    ), prefix
    assert ("google_project", "main") in tf.data
    assert (
        tf.locals["token_secret_condition"] == 'resource.name.startsWith(\\"${local.token_secret_prefix}\\")'
    )
    grants = tf.of_type("google_project_iam_member")
    reader, writer = grants["token_reader"], grants["token_writer"]
    assert (
        reader["for_each"] == "${local.functions}" and reader["role"] == "roles/secretmanager.secretAccessor"
    )
    assert reader["member"] == "serviceAccount:${google_service_account.function[each.key].email}"
    assert writer["member"] == 'serviceAccount:${google_service_account.function["oauth_callback"].email}'
    assert writer["role"] == "${google_project_iam_custom_role.token_writer.id}"
    for grant in (reader, writer):
        assert one(grant["condition"])["expression"] == "${local.token_secret_condition}"
    role = tf.resources[("google_project_iam_custom_role", "token_writer")]
    assert set(role["permissions"]) == {
        "secretmanager.secrets.create",  # the connection's secret, on its first consent
        "secretmanager.versions.access",
        "secretmanager.versions.add",
        "secretmanager.versions.destroy",
        "secretmanager.versions.disable",
        "secretmanager.versions.list",
    }, "what the Secret Manager token store calls, and nothing else (no delete, no IAM, no other secret)"
    # the store names them so: the default connection's secret, then "-<connection>"
    from calsync.state.tokens_secretmanager import SecretManagerTokenStore

    store = SecretManagerTokenStore("projects/123/secrets/calsync-refresh-token")
    assert store.secret_for("alice") == "projects/123/secrets/calsync-refresh-token-alice"
    assert store.secret_for("default") == "projects/123/secrets/calsync-refresh-token"


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


# --- who may connect, booking_hook concurrency, conditioned grants, public URL ----------------


def test_allowed_google_accounts_is_required_and_reaches_oauth_callback_only(tf: Config) -> None:
    variable = tf.variables["allowed_google_accounts"]
    assert "default" not in variable, "no default: who may connect is always an explicit choice"
    assert "any" in str(variable["validation"])
    per_function = tf.locals["function_environment"]
    assert set(per_function) == FUNCTIONS
    assert per_function["oauth_callback"] == {
        "ALLOWED_GOOGLE_ACCOUNTS": "${var.allowed_google_accounts}",
        "PUBSUB_TOPIC": "${google_pubsub_topic.sync_requests.id}",
    }
    assert "ALLOWED_GOOGLE_ACCOUNTS" not in str(
        [per_function["booking_hook"], per_function["calendar_import"]]
    )
    assert "ALLOWED_GOOGLE_ACCOUNTS" not in str(tf.locals["environment"]), "only oauth_callback needs it"
    service = one(tf.resources[("google_cloudfunctions2_function", "main")]["service_config"])
    assert "local.function_environment[each.key]" in service["environment_variables"]
    example = (TERRAFORM / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert re.search(r"^allowed_google_accounts\s*=", example, flags=re.MULTILINE)
    comment = example[: example.index("allowed_google_accounts =")].rsplit("\n\n", 1)[-1]
    assert "@domain" in comment and '"any"' in comment, "the example explains the forms it accepts"


def function_defaults(tf: Config, function: str) -> dict[str, str]:
    """The optional(...) defaults of one function in var.functions' type."""
    body = re.search(rf"{function} = optional\(object\(\{{(.*?)\}}\)", str(tf.variables["functions"]["type"]))
    assert body, function
    return dict(re.findall(r"(\w+) = optional\(\w+, \"?([^\")]+)\"?\)", body[1]))


def test_concurrency_is_per_function_and_booking_hook_serves_many(tf: Config) -> None:
    service = one(tf.resources[("google_cloudfunctions2_function", "main")]["service_config"])
    assert service["max_instance_request_concurrency"] == "${var.functions[each.key].concurrency}"
    hook = function_defaults(tf, "booking_hook")
    assert int(hook["concurrency"]) > 1 and float(hook["cpu"]) >= 1, hook
    for function in ("calendar_import", "oauth_callback"):
        assert function_defaults(tf, function)["concurrency"] == "1", function
    # Functions Framework's gunicorn runs THREADS threads: at least as many as Cloud Run sends at once.
    assert "THREADS = tostring(var.functions[key].concurrency)" in tf.locals["runtime_environment"]
    assert "local.runtime_environment[each.key]" in service["environment_variables"]
    assert service["ingress_settings"] == "${var.functions[each.key].ingress}"
    text = tf.text["variables.tf"]
    assert "Rate-limiting the public hook" in text, "the concurrency comment points at the rate-limit docs"


def test_docs_say_how_to_rate_limit_the_public_hook() -> None:
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    assert "### Rate-limiting the public hook" in deploy
    section = deploy[deploy.index("### Rate-limiting the public hook") :]
    section = section[: section.find("\n## ")]
    assert "gcloud compute security-policies rules create" in section and "--action=throttle" in section
    assert "--network-endpoint-type=serverless" in section
    assert "ALLOW_INTERNAL_AND_GCLB" in section, "without it the direct URL bypasses the limit"
    assert "--booking-hook-url" in section, "Directus must be pointed at the load balancer"


def test_project_level_grants_are_conditioned_to_calsyncs_resources(tf: Config) -> None:
    project_grants = tf.of_type("google_project_iam_member")
    unconditioned = {name for name, body in project_grants.items() if "condition" not in body}
    # logging.logWriter has no resource to narrow it to.
    assert unconditioned == {"builder_logs"}, unconditioned
    assert project_grants["builder_logs"]["role"] == "roles/logging.logWriter"
    for name, body in project_grants.items():
        if "condition" in body:
            condition = one(body["condition"])
            assert condition["title"] and condition["expression"], name
    firestore = one(project_grants["function_firestore"]["condition"])["expression"]
    assert firestore == (
        'resource.name == \\"projects/${var.project_id}/databases/${google_firestore_database.main.name}\\"'
    ), firestore
    sources = one(project_grants["builder_sources"]["condition"])["expression"]
    prefixes = re.findall(r'resource\.name\.startsWith\(\\"([^"\\]+)\\"\)', sources)
    assert prefixes and all(p.startswith("projects/_/buckets/gcf-v2-") for p in prefixes), sources
    assert set(re.split(r"\s*\|\|\s*", sources)) == {f'resource.name.startsWith(\\"{p}\\")' for p in prefixes}
    # Our own bucket is granted on the bucket, not through the project.
    bucket = tf.resources[("google_storage_bucket_iam_member", "builder_sources")]
    assert bucket["bucket"] == "${google_storage_bucket.sources.name}"
    assert bucket["role"] == "roles/storage.objectViewer"
    assert bucket["member"] == "serviceAccount:${google_service_account.builder.email}"


# Variable validations, evaluated by terraform itself: the variables alone need no provider, so
# `terraform plan` on a copy of variables.tf runs offline in a fraction of a second.
REQUIRED_VARS = {
    "project_id": "my-calsync-project",
    "directus_url": "https://crm.example.com",
    "google_client_id": "1234567890-abc.apps.googleusercontent.com",
    "allowed_google_accounts": "any",
}


@pytest.fixture(scope="module")
def variables_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    terraform = shutil.which("terraform")
    if terraform is None:
        part_unavailable("terraform", "install terraform >= 1.5 (no provider download needed)")
    folder = tmp_path_factory.mktemp("variables-only")
    shutil.copy(TERRAFORM / "variables.tf", folder / "variables.tf")
    subprocess.run([terraform, "init", "-input=false", "-backend=false"], cwd=folder, check=True,
                   capture_output=True)  # fmt: skip
    return folder


def plan_variables(folder: Path, values: dict[str, str], var_file: Path | None = None) -> tuple[bool, str]:
    args = ["terraform", "plan", "-input=false", "-refresh=false", "-no-color"]
    if var_file is not None:
        shutil.copy(var_file, folder / "given.tfvars")
        args.append("-var-file=given.tfvars")
    for name, value in values.items():
        args.append(f"-var={name}={value}")
    result = subprocess.run(args, cwd=folder, capture_output=True, text=True, check=False,
                            env={**os.environ, "TF_IN_AUTOMATION": "1"})  # fmt: skip
    return result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("allowed_google_accounts", "any", True),
        ("allowed_google_accounts", "ops@example.com", True),
        ("allowed_google_accounts", "ops@example.com, @example.org,first.last+cal@sub.example.co.uk", True),
        ("allowed_google_accounts", "@example.com", True),
        ("allowed_google_accounts", "", False),
        ("allowed_google_accounts", "anyone", False),
        ("allowed_google_accounts", "ANY", False),
        ("allowed_google_accounts", "any,ops@example.com", False),
        ("allowed_google_accounts", "ops@example.com,", False),
        ("allowed_google_accounts", "ops@localhost", False),
        ("allowed_google_accounts", "ops example@example.com", False),
        ("allowed_google_accounts", "example.com", False),
        ("directus_public_url", "https://crm.example.com", True),
        ("directus_public_url", "https://example.com/crm", True),
        ("directus_public_url", "https://example.com/administration", True),
        ("directus_public_url", "https://crm.example.com/admin", False),
        ("directus_public_url", "https://crm.example.com/admin/", False),
        ("directus_public_url", "https://example.com/crm/admin", False),
        ("functions", "{booking_hook={concurrency=1000}}", True),
        ("functions", "{booking_hook={concurrency=1001}}", False),
        ("functions", "{booking_hook={concurrency=0}}", False),
        ("functions", '{booking_hook={cpu="0.5"}}', False),
        ("functions", '{booking_hook={cpu="0.5", concurrency=1}}', True),
        ("functions", "{oauth_callback={concurrency=10}}", False),
        ("functions", '{oauth_callback={concurrency=10, cpu="1"}}', True),
        ("functions", '{booking_hook={ingress="ALLOW_INTERNAL_AND_GCLB"}}', True),
        ("functions", '{booking_hook={ingress="INTERNAL"}}', False),
        ("functions", "{calendar_import={max_instances=16}}", True),
        ("functions", "{calendar_import={max_instances=17}}", False),
        ("functions", '{calendar_import={max_instances=4, concurrency=4, cpu="1"}}', True),
        ("functions", '{calendar_import={max_instances=4, concurrency=5, cpu="1"}}', False),
        ("sync_requests", "{max_delivery_attempts=4}", False),
        ("sync_requests", "{max_delivery_attempts=100}", True),
        ("sync_requests", "{minimum_backoff_seconds=700}", False),
        ("sync_requests", "{maximum_backoff_seconds=601}", False),
        ("sync_requests", "{minimum_backoff_seconds=1, maximum_backoff_seconds=60}", True),
    ],
)
def test_variable_validation(variables_only: Path, name: str, value: str, accepted: bool) -> None:
    ok, output = plan_variables(variables_only, {**REQUIRED_VARS, name: value})
    assert ok == accepted, output[-1500:]
    if not accepted:
        assert f'variable "{name}"' in output, output[-1500:]


def test_allowed_google_accounts_has_no_default(variables_only: Path) -> None:
    ok, output = plan_variables(variables_only, {k: v for k, v in REQUIRED_VARS.items()
                                                 if k != "allowed_google_accounts"})  # fmt: skip
    assert not ok and "allowed_google_accounts" in output, output[-1500:]


def test_tfvars_example_passes_every_validation(variables_only: Path) -> None:
    ok, output = plan_variables(variables_only, {}, TERRAFORM / "terraform.tfvars.example")
    assert ok, output[-1500:]
