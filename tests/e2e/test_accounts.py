"""Several AWS accounts behind one airlock (`[[account]]`, `agent add --account`).

moto stands in for three accounts besides its default one (where airlock's own IAM user
lives): `staging` and `prod`, each with a role `airlock` that may do anything there, and
`locked`, whose role airlock's user is explicitly denied `sts:AssumeRole` on. moto picks the
account of an assumed-role session from the role ARN, and with signature checking on it
checks every call made with the session's credentials against that account's role.

The agents hold only what `airlock agent add NAME --account ... --json` printed: its AWS config
(one profile per account) in a file that `AWS_CONFIG_FILE` points at, and `AWS_PROFILE` to pick
the account. What landed where is read from moto directly, with each account's own
credentials (the role assumed with airlock's user, not through airlock). moto's request
recorder shows what airlock asked STS for.

The policy: deleting a bucket needs a receipt in prod only; deleting a table needs one
everywhere; everything else is allowed.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import botocore.session
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from support import audit_records as read_audit
from test_rust_sdk import rust_client  # noqa: F401  (the fixture that builds the client)
from support import (
    ALLOW_ALL, NOWHERE, REGION, GatedAirlock, Moto, configure, require_tool, run, scrubbed_env, unique,
)

STAGING, PROD, LOCKED, SANDBOX = "111111111111", "222222222222", "333333333333", "444444444444"
ROLE = "airlock"
ACCOUNTS = {"staging": STAGING, "prod": PROD, "locked": LOCKED}
NO_RETRIES = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})


def role_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{ROLE}"


class AccountsMoto(Moto):
    """A moto whose other accounts have the role airlock assumes (made before signature
    checking is on, in each account by moto's `x-moto-account-id` header), and whose
    airlock user may not assume the locked account's role."""

    def _provision_and_lock(self) -> None:
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "*"},
            "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]}]})
        for account in ACCOUNTS.values():
            iam = self._client("iam", "bootstrap", "bootstrap")
            iam.meta.events.register(
                "before-sign.iam.*",
                lambda request, account=account, **_: request.headers.__setitem__("x-moto-account-id", account))
            iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=trust)
            iam.put_role_policy(RoleName=ROLE, PolicyName="allow-all", PolicyDocument=ALLOW_ALL)
        # The sandbox is reached through a profile of airlock's own AWS config: a user's keys.
        iam = self._client("iam", "bootstrap", "bootstrap")
        iam.meta.events.register("before-sign.iam.*",
                                 lambda request, **_: request.headers.__setitem__("x-moto-account-id", SANDBOX))
        iam.create_user(UserName="sandbox-admin")
        iam.put_user_policy(UserName="sandbox-admin", PolicyName="allow-all", PolicyDocument=ALLOW_ALL)
        self.sandbox_key = iam.create_access_key(UserName="sandbox-admin")["AccessKey"]
        super()._provision_and_lock()
        self.client("iam").put_user_policy(
            UserName=self.user_name, PolicyName="not-the-locked-account",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Deny", "Action": "sts:AssumeRole", "Resource": role_arn(LOCKED)}]}))

    def client_in(self, account: str, service: str) -> Any:
        """A client that talks to moto DIRECTLY, as the account's role (assumed with the real
        credentials): for reading what landed in that account."""
        creds = self.client("sts").assume_role(RoleArn=role_arn(account), RoleSessionName="e2e-check")["Credentials"]
        session = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                        aws_secret_access_key=creds["SecretAccessKey"],
                                        aws_session_token=creds["SessionToken"], region_name=REGION)
        return session.client(service, endpoint_url=self.url, config=Config(s3={"addressing_style": "path"}))

    def recording(self) -> list[dict[str, Any]]:
        """The requests moto recorded since recording started: method, url, headers, body."""
        r = requests.get(f"{self.url}/moto-api/recorder/download-recording", timeout=10)
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def assume_role_requests(moto: AccountsMoto) -> list[dict[str, list[str]]]:
    """The form of every AssumeRole call moto recorded."""
    forms = []
    for entry in moto.recording():
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode()
        form = parse_qs(body)
        if form.get("Action") == ["AssumeRole"]:
            forms.append(form)
    return forms


@pytest.fixture(scope="module")
def accounts_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsMoto]:
    moto = AccountsMoto(tmp_path_factory.mktemp("moto-accounts"))
    try:
        moto.start()
        r = requests.post(f"{moto.url}/moto-api/recorder/start-recording", timeout=10)
        assert r.status_code == 200, r.text
        yield moto
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, accounts_moto: AccountsMoto) -> Iterator[GatedAirlock]:
    airlock = GatedAirlock(tmp_path_factory.mktemp("airlock-accounts"), accounts_moto)
    try:
        airlock.init("enforce")
        configure(airlock.config, {("approval", "hold_seconds"): 0, ("notify", "desktop"): False,
                                   ("policy", "builtin"): False})
        airlock.add_approver("alice")
        with open(airlock.config, "a") as f:
            f.write("\n")
            for name, account in ACCOUNTS.items():
                f.write(f'[[account]]\nname = "{name}"\nid = "{account}"\nrole_arn = "{role_arn(account)}"\n')
                if name == "prod":
                    f.write('external_id = "airlock-e2e"\n')
                f.write(f'\n[[environment]]\nname = "{name}"\naccounts = ["{account}"]\n\n')
            f.write('[[rule]]\nname = "prod-buckets-need-a-human"\neffect = "require_receipt"\n'
                    'actions = ["s3:DeleteBucket"]\nenvironments = ["prod"]\n\n'
                    '[[rule]]\nname = "tables-need-a-human"\neffect = "require_receipt"\n'
                    'actions = ["dynamodb:DeleteTable"]\n')
        airlock.start()
        yield airlock
    finally:
        airlock.stop()


class BoundAgent:
    """An agent set up from `agent add --account ... --json`: its AWS config file, and a
    client per profile, with nothing else of AWS in its environment."""

    def __init__(self, gate: GatedAirlock, name: str, printed: dict[str, Any]):
        self.name = name
        self.printed = printed
        self.config_file = gate.home / f"{name}.aws-config"
        self.config_file.write_text(printed["aws_config"])
        self.config_file.chmod(0o600)

    @property
    def profiles(self) -> list[str]:
        return sorted(self.printed["profiles"])

    def env(self, profile: str) -> dict[str, str]:
        env = scrubbed_env()
        env.update({"AWS_CONFIG_FILE": str(self.config_file), "AWS_PROFILE": profile,
                    "AWS_DEFAULT_REGION": REGION, **self.printed["environment"]})
        return env

    def client(self, profile: str, service: str) -> Any:
        """boto3 as the agent runs it: the profile from its config file, nothing else."""
        core = botocore.session.Session()
        core.set_config_variable("config_file", str(self.config_file))
        core.set_config_variable("credentials_file", str(NOWHERE / "credentials"))
        core.set_config_variable("profile", profile)
        return boto3.session.Session(botocore_session=core, region_name=REGION).client(service, config=NO_RETRIES)

    def aws(self, profile: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The AWS CLI with AWS_PROFILE=profile."""
        return run([require_tool("aws"), *args, "--output", "json"], self.env(profile), timeout=120, check=False)


def add_agent(gate: GatedAirlock, name: str, *accounts: str) -> BoundAgent:
    args = ["agent", "add", name, "--json"]
    for a in accounts:
        args += ["--account", a]
    printed = json.loads(gate.cli(*args).stdout)
    return BoundAgent(gate, name, printed)


def error_of(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def buckets(moto: AccountsMoto, account: str) -> set[str]:
    return {b["Name"] for b in moto.client_in(account, "s3").list_buckets()["Buckets"]}


def tables(moto: AccountsMoto, account: str) -> set[str]:
    return set(moto.client_in(account, "dynamodb").list_tables()["TableNames"])


def create_table(client: Any, name: str) -> None:
    client.create_table(TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")


def audit_records(gate: GatedAirlock) -> list[dict[str, Any]]:
    return read_audit(gate.state_dir)


# --- one account, then two -----------------------------------------------------------------------


def test_staging_agent_creates_and_deletes_freely_in_staging_only(gate: GatedAirlock, accounts_moto: AccountsMoto) -> None:
    agent = add_agent(gate, unique("stager"), "staging")
    assert agent.profiles == ["airlock-staging"]
    profile = agent.printed["profiles"]["airlock-staging"]
    assert profile["account"] == "staging"
    assert profile["AWS_ACCESS_KEY_ID"].startswith("AIRLOCK")
    assert "[profile airlock-staging]" in agent.printed["aws_config"]
    assert accounts_moto.secret_access_key not in json.dumps(agent.printed)

    bucket = unique("staging-bucket")
    # The AWS CLI picks the account by AWS_PROFILE alone.
    made = agent.aws("airlock-staging", "s3api", "create-bucket", "--bucket", bucket,
                     "--create-bucket-configuration", f"LocationConstraint={REGION}")
    assert made.returncode == 0, made.stderr
    assert bucket in buckets(accounts_moto, STAGING)
    assert bucket not in buckets(accounts_moto, PROD)
    assert bucket not in {b["Name"] for b in accounts_moto.client("s3").list_buckets()["Buckets"]}

    s3 = agent.client("airlock-staging", "s3")
    s3.put_object(Bucket=bucket, Key="k.txt", Body=b"staging bytes")
    assert accounts_moto.client_in(STAGING, "s3").get_object(Bucket=bucket, Key="k.txt")["Body"].read() == b"staging bytes"
    s3.delete_object(Bucket=bucket, Key="k.txt")
    # Deleting a bucket needs a receipt in prod only: in staging it just happens.
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in buckets(accounts_moto, STAGING)

    # The session airlock used carries the agent's name: moto names the caller by it...
    who = agent.client("airlock-staging", "sts").get_caller_identity()
    assert who["Account"] == STAGING, who
    assert who["Arn"] == f"arn:aws:sts::{STAGING}:assumed-role/{ROLE}/{agent.name}", who
    # ...and airlock asked STS for exactly that source identity and tag.
    mine = [f for f in assume_role_requests(accounts_moto) if f.get("RoleSessionName") == [agent.name]]
    assert mine, "airlock never assumed the staging role for this agent"
    for form in mine:
        assert form["RoleArn"] == [role_arn(STAGING)], form
        assert form["SourceIdentity"] == [agent.name], form
        assert form["Tags.member.1.Key"] == ["airlock:agent"] and form["Tags.member.1.Value"] == [agent.name], form
        assert "ExternalId" not in form and "Tags.member.2.Key" not in form, form


def test_aws_sdk_rust_is_the_account_its_profile_names(gate: GatedAirlock, rust_client: Path) -> None:
    """aws-sdk-rust reads the profile (its key and `endpoint_url`) from the file AWS_CONFIG_FILE
    names: GetCallerIdentity answers with the session airlock assumed in that account, named
    after the agent, not airlock's own user. The SDK ignores a profile's `ca_bundle`: it is
    given airlock's CA in SSL_CERT_FILE, as the README says to."""
    agent = add_agent(gate, unique("rusty"), "staging", "prod")
    for profile, account in (("airlock-staging", STAGING), ("airlock-prod", PROD)):
        env = {**agent.env(profile), "AWS_MAX_ATTEMPTS": "1",
               "SSL_CERT_FILE": agent.printed["profiles"][profile]["AWS_CA_BUNDLE"]}
        proc = run([str(rust_client), "get-caller-identity"], env, timeout=120, check=False)
        [who] = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()] or [{"stderr": proc.stderr}]
        assert who.get("ok"), who
        assert (who["account"], who["arn"]) == (account, f"arn:aws:sts::{account}:assumed-role/{ROLE}/{agent.name}"), who


def test_prod_profile_exists_only_once_bound(gate: GatedAirlock, accounts_moto: AccountsMoto) -> None:
    agent = add_agent(gate, unique("stager"), "staging")
    # No prod profile, so no way to name prod at all.
    proc = agent.aws("airlock-prod", "sts", "get-caller-identity")
    assert proc.returncode != 0 and "airlock-prod" in proc.stderr and "could not be found" in proc.stderr, proc.stderr

    # A key for prod that airlock never issued is refused before anything reaches moto.
    staging = agent.printed["profiles"]["airlock-staging"]
    forged_id = "AIRLOCK" + "PRODPRODPROD2"
    forged = boto3.session.Session(aws_access_key_id=forged_id, aws_secret_access_key=staging["AWS_SECRET_ACCESS_KEY"],
                                   region_name=REGION).client("sts", endpoint_url=gate.proxy_url,
                                                              verify=staging["AWS_CA_BUNDLE"], config=NO_RETRIES)
    before = accounts_moto.request_count()
    assert error_of(forged.get_caller_identity)["Code"] == "InvalidClientTokenId"
    assert accounts_moto.request_count() == before

    # Bound to prod as well: the staging key stays, prod gets a key of its own.
    both = add_agent(gate, agent.name, "prod")
    assert both.profiles == ["airlock-prod", "airlock-staging"]
    assert both.printed["profiles"]["airlock-staging"]["AWS_ACCESS_KEY_ID"] == staging["AWS_ACCESS_KEY_ID"]
    assert both.printed["profiles"]["airlock-prod"]["AWS_ACCESS_KEY_ID"] != staging["AWS_ACCESS_KEY_ID"]
    who = both.client("airlock-prod", "sts").get_caller_identity()
    assert who["Account"] == PROD and who["Arn"].endswith(f"/{both.name}"), who
    # Binding an account it already has issues nothing.
    again = gate.cli("agent", "add", agent.name, "--account", "prod", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    # An account the config does not name cannot be bound.
    unknown = gate.cli("agent", "add", unique("x"), "--account", "nowhere", check=False)
    assert unknown.returncode != 0 and "nowhere" in unknown.stderr, unknown.stderr


def test_a_staging_receipt_does_not_cover_the_same_call_in_prod(gate: GatedAirlock, accounts_moto: AccountsMoto) -> None:
    agent = add_agent(gate, unique("both"), "staging", "prod")
    table = unique("orders")
    for profile in agent.profiles:
        create_table(agent.client(profile, "dynamodb"), table)
    assert table in tables(accounts_moto, STAGING) and table in tables(accounts_moto, PROD)

    staging, prod = agent.client("airlock-staging", "dynamodb"), agent.client("airlock-prod", "dynamodb")
    refused = error_of(staging.delete_table, TableName=table)
    assert refused["Code"] == "AccessDeniedException", refused
    staging_approval = gate.approval_id(refused["Message"])
    record = gate.approval_record(staging_approval)
    assert (record["call"]["account"], record["environment"]) == (STAGING, "staging"), record
    receipt = gate.approve(staging_approval).id

    # The same call, in prod, is a call of its own: refused, with an approval of its own.
    refused = error_of(prod.delete_table, TableName=table)
    assert refused["Code"] == "AccessDeniedException", refused
    prod_approval = gate.approval_id(refused["Message"])
    assert prod_approval != staging_approval
    assert (gate.approval_record(prod_approval)["call"]["account"], gate.approval_record(prod_approval)["environment"]) == (PROD, "prod")
    assert table in tables(accounts_moto, PROD)

    # The staging receipt goes through in staging, under a session tagged with it.
    staging.delete_table(TableName=table)
    assert table not in tables(accounts_moto, STAGING)
    assert table in tables(accounts_moto, PROD)
    tagged = [f for f in assume_role_requests(accounts_moto) if f.get("Tags.member.2.Value") == [receipt]]
    assert len(tagged) == 1, tagged
    assert tagged[0]["Tags.member.2.Key"] == ["airlock:approval"]
    assert tagged[0]["RoleArn"] == [role_arn(STAGING)] and tagged[0]["SourceIdentity"] == [agent.name]
    # airlock assumes the prod role with its external id (the test's own checks do not).
    prod_forms = [f for f in assume_role_requests(accounts_moto)
                  if f["RoleArn"] == [role_arn(PROD)] and f.get("SourceIdentity") == [agent.name]]
    assert prod_forms and all(f["ExternalId"] == ["airlock-e2e"] for f in prod_forms)

    # In prod a bucket needs a receipt to go; it stays in prod.
    bucket = unique("prod-bucket")
    s3 = agent.client("airlock-prod", "s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    assert bucket in buckets(accounts_moto, PROD) and bucket not in buckets(accounts_moto, STAGING)
    assert error_of(s3.delete_bucket, Bucket=bucket)["Code"] == "AccessDenied"
    assert bucket in buckets(accounts_moto, PROD)


def test_a_role_that_cannot_be_assumed_is_named(gate: GatedAirlock, accounts_moto: AccountsMoto) -> None:
    agent = add_agent(gate, unique("locked-out"), "locked")
    sts = agent.client("airlock-locked", "sts")
    error = error_of(sts.get_caller_identity)
    assert error["Code"] == "AccessDenied", error
    message = error["Message"]
    assert f"locked ({LOCKED})" in message and role_arn(LOCKED) in message, message
    assert "not authorized" in message or "AccessDenied" in message, message
    for secret in (accounts_moto.access_key_id, accounts_moto.secret_access_key):
        assert secret not in message
    # The CLI prints it as AWS's own error.
    proc = agent.aws("airlock-locked", "sts", "get-caller-identity")
    assert proc.returncode != 0 and f"locked ({LOCKED})" in proc.stderr, proc.stderr

    [record, *_] = [r for r in reversed(audit_records(gate)) if r.get("agent") == agent.name]
    assert record["event"] == "account_unreachable", record
    assert record["code"] == "AccessDenied" and role_arn(LOCKED) in record["reason"], record
    log = json.dumps(audit_records(gate)) + gate.log_tail()
    assert accounts_moto.secret_access_key not in log


class KeylessAirlock(GatedAirlock):
    """An airlock started with no AWS credentials of its own at all."""

    def _serve_env(self) -> dict[str, str]:
        return scrubbed_env()


def test_no_route_and_no_source_credentials_are_named(tmp_path_factory: pytest.TempPathFactory,
                                                      accounts_moto: AccountsMoto) -> None:
    airlock = KeylessAirlock(tmp_path_factory.mktemp("airlock-keyless"), accounts_moto)
    try:
        airlock.init("enforce")
        configure(airlock.config, {("approval", "hold_seconds"): 0, ("notify", "desktop"): False})
        staging = f'\n[[account]]\nname = "staging"\nid = "{STAGING}"\nrole_arn = "{role_arn(STAGING)}"\n'
        retired = f'\n[[account]]\nname = "retired"\nid = "{PROD}"\nrole_arn = "{role_arn(PROD)}"\n'
        base = airlock.config.read_text() + staging
        airlock.config.write_text(base + retired)
        stager = add_agent(airlock, unique("stager"), "staging")
        orphan = add_agent(airlock, unique("orphan"), "retired")
        # The account is taken out of the config; the agent's key still says "retired".
        airlock.config.write_text(base)
        airlock.start()
        # Added before serve bound its port (0 in the config): point them at the bound one.
        for agent in (stager, orphan):
            agent.config_file.write_text(agent.config_file.read_text().replace(
                "https://localhost:0", airlock.proxy_url))
        before = accounts_moto.request_count()

        error = error_of(orphan.client("airlock-retired", "sts").get_caller_identity)
        assert error["Code"] == "AccessDenied", error
        assert 'no route to account "retired"' in error["Message"] and orphan.name in error["Message"], error

        error = error_of(stager.client("airlock-staging", "sts").get_caller_identity)
        assert error["Code"] == "ExpiredToken", error
        assert f"staging ({STAGING})" in error["Message"] and "own AWS credentials" in error["Message"], error
        assert accounts_moto.request_count() == before, "a call without a route reached moto"

        events = {r.get("agent"): r for r in audit_records(airlock)}
        assert events[orphan.name]["event"] == "account_unreachable", events[orphan.name]
        assert events[stager.name]["event"] == "account_unreachable", events[stager.name]
        assert events[stager.name]["code"] == "ExpiredToken", events[stager.name]
    finally:
        airlock.stop()


def test_change_sets_are_read_in_the_agents_account(tmp_path_factory: pytest.TempPathFactory,
                                                    accounts_moto: AccountsMoto) -> None:
    """With the built-in catalogue on, `ExecuteChangeSet` is decided by reading the change set:
    airlock reads it as the agent's account (a change set in staging does not exist in airlock's
    own account). One that only adds goes through; one that removes a topic needs a receipt."""
    airlock = GatedAirlock(tmp_path_factory.mktemp("airlock-accounts-cfn"), accounts_moto)
    try:
        airlock.init("enforce")
        configure(airlock.config, {("approval", "hold_seconds"): 0, ("notify", "desktop"): False})
        with open(airlock.config, "a") as f:
            f.write(f'\n[[account]]\nname = "staging"\nid = "{STAGING}"\nrole_arn = "{role_arn(STAGING)}"\n')
        airlock.start()
        agent = add_agent(airlock, unique("deployer"), "staging")
        cfn = accounts_moto.client_in(STAGING, "cloudformation")

        def topic(name: str) -> dict[str, Any]:
            return {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": name}}

        def body(**resources: Any) -> str:
            return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources})

        stack, first, second = unique("app"), unique("alerts"), unique("more")
        cfn.create_stack(StackName=stack, TemplateBody=body(First=topic(first)))
        adds = cfn.create_change_set(StackName=stack, ChangeSetName=unique("adds"), ChangeSetType="UPDATE",
                                     TemplateBody=body(First=topic(first), Second=topic(second)))["Id"]
        agent.client("airlock-staging", "cloudformation").execute_change_set(ChangeSetName=adds)
        resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
        assert sorted(r["LogicalResourceId"] for r in resources) == ["First", "Second"]

        removes = cfn.create_change_set(StackName=stack, ChangeSetName=unique("removes"), ChangeSetType="UPDATE",
                                        TemplateBody=body(Second=topic(second)))["Id"]
        error = error_of(agent.client("airlock-staging", "cloudformation").execute_change_set, ChangeSetName=removes)
        assert error["Code"] == "AccessDenied" and "First" in error["Message"], error
        resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
        assert sorted(r["LogicalResourceId"] for r in resources) == ["First", "Second"]
    finally:
        airlock.stop()


def test_exec_runs_a_bound_agent_in_the_account_its_profile_names(gate: GatedAirlock) -> None:
    agent = add_agent(gate, unique("exec"), "staging", "prod")
    binary, config = str(gate.binary), str(gate.config)
    parent = {**scrubbed_env(), "AWS_ACCESS_KEY_ID": "AKIAREALKEY", "AWS_SECRET_ACCESS_KEY": "real-secret",
              "AWS_DEFAULT_REGION": REGION}

    def caller(**extra: str) -> dict[str, Any]:
        proc = run([binary, "--config", config, "exec", agent.name, "--", "aws", "sts", "get-caller-identity",
                    "--output", "json"], {**parent, **extra}, timeout=120)
        return json.loads(proc.stdout)

    # The first account's profile by default, the one AWS_PROFILE names otherwise.
    assert caller()["Account"] == STAGING
    assert caller(AWS_PROFILE="airlock-prod")["Account"] == PROD
    wrong = run([binary, "--config", config, "exec", agent.name, "--", "true"],
                {**parent, "AWS_PROFILE": "airlock-sandbox"}, check=False)
    assert wrong.returncode != 0 and "airlock-sandbox" in wrong.stderr, wrong.stderr

    env = run([binary, "--config", config, "exec", agent.name, "--", "env"], parent).stdout
    variables = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
    # No key in the environment (it would outrank the profile), and none of the real ones.
    assert "AWS_ACCESS_KEY_ID" not in variables and "AKIAREALKEY" not in env and "real-secret" not in env
    written = Path(variables["AWS_CONFIG_FILE"])
    assert written.stat().st_mode & 0o777 == 0o600
    assert "[profile airlock-staging]" in written.read_text() and "[profile airlock-prod]" in written.read_text()


class ProfileAirlock(GatedAirlock):
    """An airlock whose own AWS config has a profile for the sandbox account."""

    aws_config: Path

    def _serve_env(self) -> dict[str, str]:
        return {**super()._serve_env(), "AWS_CONFIG_FILE": str(self.aws_config)}


def start_profile_airlock(tmp_path_factory: pytest.TempPathFactory, accounts_moto: AccountsMoto,
                          account_id: str) -> ProfileAirlock:
    """An airlock whose `[[account]] sandbox` is configured as `account_id` and reached
    through a profile holding the sandbox account's user keys."""
    airlock = ProfileAirlock(tmp_path_factory.mktemp("airlock-profile"), accounts_moto)
    airlock.init("enforce")
    configure(airlock.config, {("approval", "hold_seconds"): 0, ("notify", "desktop"): False})
    key = accounts_moto.sandbox_key
    airlock.aws_config = airlock.home / "aws-config"
    airlock.aws_config.write_text(f"[profile sandbox-admin]\naws_access_key_id = {key['AccessKeyId']}\n"
                                  f"aws_secret_access_key = {key['SecretAccessKey']}\n")
    airlock.aws_config.chmod(0o600)
    with open(airlock.config, "a") as f:
        f.write(f'\n[[account]]\nname = "sandbox"\nid = "{account_id}"\nprofile = "sandbox-admin"\n')
    airlock.start()
    return airlock


def test_a_profile_whose_keys_are_another_accounts_is_refused(tmp_path_factory: pytest.TempPathFactory,
                                                               accounts_moto: AccountsMoto) -> None:
    # Configured as prod, but the profile's keys are the sandbox account's.
    airlock = start_profile_airlock(tmp_path_factory, accounts_moto, PROD)
    try:
        agent = add_agent(airlock, unique("mislabeled"), "sandbox")
        bucket = unique("mislabeled-bucket")
        error = error_of(lambda: agent.client("airlock-sandbox", "s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}))
        message = error["Message"]
        assert f"sandbox ({PROD})" in message, message
        assert f"credentials are for account {SANDBOX}, not {PROD}" in message, message
        key = accounts_moto.sandbox_key
        sandbox_s3 = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                           aws_secret_access_key=key["SecretAccessKey"],
                                           region_name=REGION).client("s3", endpoint_url=accounts_moto.url)
        assert bucket not in {b["Name"] for b in sandbox_s3.list_buckets()["Buckets"]}
        assert bucket not in buckets(accounts_moto, PROD)
        assert accounts_moto.sandbox_key["SecretAccessKey"] not in message + airlock.log_tail()
    finally:
        airlock.stop()


def test_an_account_reached_through_a_profile(tmp_path_factory: pytest.TempPathFactory,
                                               accounts_moto: AccountsMoto) -> None:
    airlock = start_profile_airlock(tmp_path_factory, accounts_moto, SANDBOX)
    key = accounts_moto.sandbox_key
    try:
        agent = add_agent(airlock, unique("sandboxer"), "sandbox")
        who = agent.client("airlock-sandbox", "sts").get_caller_identity()
        assert who["Account"] == SANDBOX and who["Arn"].endswith(":user/sandbox-admin"), who
        bucket = unique("sandbox-bucket")
        agent.client("airlock-sandbox", "s3").create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        assert bucket not in buckets(accounts_moto, STAGING)
        sandbox_s3 = boto3.session.Session(aws_access_key_id=key["AccessKeyId"],
                                           aws_secret_access_key=key["SecretAccessKey"],
                                           region_name=REGION).client("s3", endpoint_url=accounts_moto.url)
        assert bucket in {b["Name"] for b in sandbox_s3.list_buckets()["Buckets"]}
        assert key["SecretAccessKey"] not in airlock.log_tail()
    finally:
        airlock.stop()
