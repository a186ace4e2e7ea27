"""Every fixture body is accepted with its provider's signature and event header, and the event
read back from a queue bound to ``relay.events`` is checked field by field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.gateway.conftest import FIXTURES, Harness, signed

Z = "0" * 40


def push(
    provider: str, receiver: str, repo: str, clone: str | None, ref: str, **kw: Any
) -> dict[str, Any]:
    data = {
        "provider": provider,
        "receiver": receiver,
        "repository": {"full_name": repo, **({"clone_url": clone} if clone else {})},
        "ref": ref,
        **kw,
    }
    name = ref.split("/", 2)[2]
    data["tag" if ref.startswith("refs/tags/") else "branch"] = name
    data.setdefault("created", data["before"] == Z)
    data.setdefault("deleted", data["after"] == Z)
    return data


GH_REPO, GH_CLONE = "Codertocat/Hello-World", "https://github.com/Codertocat/Hello-World.git"
BBC_CLONE = "https://bitbucket.org/brydzewski/foo.git"
BB_SHA_OLD, BB_SHA = (
    "40e7580cf11311d84a6e5e97e2cbba6df1675750",
    "141977fedf5cf35aa290ac87d4b5177ac4cd9de1",
)

PUSHES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    (
        "github/push.json",
        "gh",
        "push",
        "git.push",
        push(
            "github",
            "gh",
            GH_REPO,
            GH_CLONE,
            "refs/heads/master",
            before="a10867b14bb761a232cd80139fbd4c0d33264240",
            after="199eddf46df50de8d02e99bf1c5fdb4101338224",
            commits=1,
            pusher="Codertocat",
        ),
    ),
    (
        "github/push_tag_created.json",
        "gh",
        "push",
        "git.tag",
        push(
            "github",
            "gh",
            GH_REPO,
            GH_CLONE,
            "refs/tags/simple-tag",
            before=Z,
            after="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            commits=0,
            pusher="Codertocat",
        ),
    ),
    (
        "github/push_branch_deleted.json",
        "gh",
        "push",
        "git.push",
        push(
            "github",
            "gh",
            "bradrydzewski/drone-test-go",
            "https://github.com/bradrydzewski/drone-test-go.git",
            "refs/heads/feature-branch",
            before="d2b75aa7797ec26b088fa2dd527e9d2c052fcedd",
            after=Z,
            commits=0,
            pusher="bradrydzewski",
        ),
    ),
    (
        "gitlab/push.json",
        "gl",
        "Push Hook",
        "git.push",
        push(
            "gitlab",
            "gl",
            "mike/diaspora",
            "http://example.com/mike/diaspora.git",
            "refs/heads/master",
            before="95790bf891e76fee5e1747ab589903a6a1f80f22",
            after="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            commits=4,
            pusher="jsmith",
        ),
    ),
    (
        "gitlab/tag_push.json",
        "gl",
        "Tag Push Hook",
        "git.tag",
        push(
            "gitlab",
            "gl",
            "jsmith/example",
            "http://example.com/jsmith/example.git",
            "refs/tags/v1.0.0",
            before=Z,
            after="82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            commits=0,
            pusher="John Smith",
        ),
    ),
    (
        "gitlab/push_branch_deleted.json",
        "gl",
        "Push Hook",
        "git.push",
        push(
            "gitlab",
            "gl",
            "gitlab-org/hello-world",
            "https://gitlab.com/gitlab-org/hello-world.git",
            "refs/heads/feature",
            before="c4c79227ed610f1151f05bbc5be33b4f340d39c8",
            after=Z,
            commits=0,
            pusher="sytses",
        ),
    ),
    (
        "gitea/push.json",
        "gt",
        "push",
        "git.push",
        push(
            "gitea",
            "gt",
            "example/example",
            "http://localhost:3000/example/example.git",
            "refs/heads/master",
            before=Z,
            after="67b56589a45103f891bdee7c0546e5d40bc02001",
            commits=1,
            pusher="example",
        ),
    ),
    (
        "gitea/push_docs.json",
        "gt",
        "push",
        "git.push",
        push(
            "gitea",
            "gt",
            "gitea/webhooks",
            "http://localhost:3000/gitea/webhooks.git",
            "refs/heads/develop",
            before="28e1879d029cb852e4844d9c718537df08844e03",
            after="bffeb74224043ba2feb48d137756c8a9331c449a",
            commits=1,
            pusher="gitea",
        ),
    ),
    (
        "gitea/push_docs.json",
        "fj",
        "push",
        "git.push",
        push(
            "forgejo",
            "fj",
            "gitea/webhooks",
            "http://localhost:3000/gitea/webhooks.git",
            "refs/heads/develop",
            before="28e1879d029cb852e4844d9c718537df08844e03",
            after="bffeb74224043ba2feb48d137756c8a9331c449a",
            commits=1,
            pusher="gitea",
        ),
    ),
    (
        "bitbucket-cloud/repo_push.json",
        "bb",
        "repo:push",
        "git.push",
        push(
            "bitbucket",
            "bb",
            "brydzewski/foo",
            BBC_CLONE,
            "refs/heads/master",
            before=BB_SHA_OLD,
            after=BB_SHA,
            commits=1,
            pusher="brydzewski",
        ),
    ),
    (
        "bitbucket-cloud/repo_push_branch_created.json",
        "bb",
        "repo:push",
        "git.push",
        push(
            "bitbucket",
            "bb",
            "brydzewski/foo",
            BBC_CLONE,
            "refs/heads/develop",
            before=Z,
            after=BB_SHA,
            commits=2,
            pusher="brydzewski",
        ),
    ),
    (
        "bitbucket-cloud/repo_push_tag_created.json",
        "bb",
        "repo:push",
        "git.tag",
        push(
            "bitbucket",
            "bb",
            "brydzewski/foo",
            BBC_CLONE,
            "refs/tags/feature/x",
            before=Z,
            after=BB_SHA,
            commits=0,
            pusher="brydzewski",
        ),
    ),
    (
        "bitbucket-cloud/repo_push_branch_deleted.json",
        "bb",
        "repo:push",
        "git.push",
        push(
            "bitbucket",
            "bb",
            "brydzewski/foo",
            BBC_CLONE,
            "refs/heads/develop",
            before=BB_SHA,
            after=Z,
            commits=0,
            pusher="brydzewski",
        ),
    ),
    (
        "bitbucket-server/repo_refs_changed.json",
        "bbs",
        "repo:refs_changed",
        "git.push",
        push(
            "bitbucket-server",
            "bbs",
            "PRJ/my-repo",
            None,
            "refs/heads/master",
            before="5c64a07cd6c0f21b753bf261ef059c7e7633c50a",
            after="823b2230a56056231c9425d63758fa87078a66b4",
            commits=0,
            pusher="jcitizen",
        ),
    ),
    (
        "bitbucket-server/repo_refs_changed_branch_created.json",
        "bbs",
        "repo:refs_changed",
        "git.push",
        push(
            "bitbucket-server",
            "bbs",
            "PRJ/my-repo",
            None,
            "refs/heads/develop",
            before=Z,
            after="208b0a5c05eddadad01f2aed8802fe0c3b3eaf5e",
            commits=0,
            pusher="jcitizen",
        ),
    ),
    (
        "bitbucket-server/repo_refs_changed_tag_created.json",
        "bbs",
        "repo:refs_changed",
        "git.tag",
        push(
            "bitbucket-server",
            "bbs",
            "PRJ/my-repo",
            None,
            "refs/tags/v1.1.0",
            before=Z,
            after="823b2230a56056231c9425d63758fa87078a66b4",
            commits=0,
            pusher="jcitizen",
        ),
    ),
    (
        "bitbucket-server/repo_refs_changed_feature_branch.json",
        "bbs",
        "repo:refs_changed",
        "git.push",
        push(
            "bitbucket-server",
            "bbs",
            "~gopher/webhook-test",
            "https://server.bitbucket.local/scm/~gopher/webhook-test.git",
            "refs/heads/feature/wip",
            before="32a0b8a740c2963c6f56bd8baf3dc05683d299e0",
            after=Z,
            commits=0,
            pusher="gopher",
        ),
    ),
]

OTHERS: list[tuple[str, str, str, str, str | None, str | None]] = [
    (
        "github/pull_request_opened.json",
        "gh",
        "pull_request",
        "git.pull_request",
        "opened",
        GH_REPO,
    ),
    (
        "github/pull_request_synchronize.json",
        "gh",
        "pull_request",
        "git.pull_request",
        "synchronize",
        GH_REPO,
    ),
    (
        "github/pull_request_closed_merged.json",
        "gh",
        "pull_request",
        "git.pull_request",
        "closed",
        None,
    ),
    ("github/release_published.json", "gh", "release", "git.release", "published", GH_REPO),
    ("github/create_tag.json", "gh", "create", "git.create", None, GH_REPO),
    ("github/delete_tag.json", "gh", "delete", "git.delete", None, GH_REPO),
    (
        "github/workflow_run_completed.json",
        "gh",
        "workflow_run",
        "git.workflow_run",
        "completed",
        "octo-org/octo-repo",
    ),
    (
        "github/package_published_container.json",
        "gh",
        "package",
        "git.package",
        "published",
        "Codertocat/hello-world-npm",
    ),
    (
        "gitlab/merge_request_open.json",
        "gl",
        "Merge Request Hook",
        "git.merge_request",
        None,
        "gitlabhq/gitlab-test",
    ),
    (
        "gitlab/pipeline_success.json",
        "gl",
        "Pipeline Hook",
        "git.pipeline",
        None,
        "gitlab-org/gitlab-test",
    ),
    (
        "gitlab/release_create.json",
        "gl",
        "Release Hook",
        "git.release",
        "create",
        "exm-namespace/example-project",
    ),
    ("gitea/create_tag.json", "gt", "create", "git.create", None, "gogits/hello-world"),
    ("gitea/delete_tag.json", "gt", "delete", "git.delete", None, "gogits/hello-world"),
    (
        "gitea/pull_request_edited.json",
        "gt",
        "pull_request",
        "git.pull_request",
        "edited",
        "jcitizen/my-repo",
    ),
]


def body_of(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def envelope_checks(event: dict[str, Any], routing_key: str, receiver: str) -> None:
    assert event["specversion"] == "1.0"
    assert event["type"] == f"dev.relay.{routing_key}"
    assert event["source"] == f"/hook/{receiver}"
    assert event["datacontenttype"] == "application/json"
    assert event["id"] and event["time"]


@pytest.mark.parametrize(("name", "receiver", "event", "key", "data"), PUSHES)
async def test_push_fixtures_are_normalised(
    gateway: Harness, name: str, receiver: str, event: str, key: str, data: dict[str, Any]
) -> None:
    body = body_of(name)
    resp = await gateway.hook(receiver, body, signed(receiver, body, event, **_delivery(receiver)))
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    got = await gateway.events.get()
    envelope_checks(got, key, receiver)
    assert got["id"] == answer["event_id"]
    assert got["subject"] == data["repository"]["full_name"]
    assert got["data"] == data
    assert await gateway.events.empty()


@pytest.mark.parametrize(("name", "receiver", "event", "key", "action", "repo"), OTHERS)
async def test_other_events_keep_their_payload(
    gateway: Harness,
    name: str,
    receiver: str,
    event: str,
    key: str,
    action: str | None,
    repo: str | None,
) -> None:
    body = body_of(name)
    resp = await gateway.hook(receiver, body, signed(receiver, body, event, **_delivery(receiver)))
    assert resp.status == 202, await resp.text()
    got = await gateway.events.get()
    envelope_checks(got, key, receiver)
    data = got["data"]
    assert data["provider"] == {"gh": "github", "gl": "gitlab", "gt": "gitea"}[receiver]
    assert data["receiver"] == receiver
    assert data["event"] == event
    assert data.get("action") == action
    assert data["payload"] == json.loads(body)
    if repo is not None:
        assert data["repository"]["full_name"] == repo
    if action is not None:
        assert data["summary"]["action"] == action


async def test_github_ping_answers_200(gateway: Harness) -> None:
    body = body_of("github/ping.json")
    resp = await gateway.hook("gh", body, signed("gh", body, "ping", **{"X-GitHub-Delivery": "p1"}))
    assert resp.status == 200
    assert (await resp.json())["ping"] is True
    got = await gateway.events.get()
    envelope_checks(got, "git.ping", "gh")
    payload = json.loads(body)
    assert got["data"]["summary"]["zen"] == payload["zen"]
    assert got["data"]["summary"]["hook_id"] == payload["hook_id"]


async def test_bitbucket_server_diagnostics_ping(gateway: Harness) -> None:
    body = b"{}"
    resp = await gateway.hook("bbs", body, signed("bbs", body, "diagnostics:ping"))
    assert resp.status == 200
    assert (await resp.json())["ping"] is True


async def test_bitbucket_cloud_push_with_several_changes(gateway: Harness) -> None:
    base = json.loads(body_of("bitbucket-cloud/repo_push.json"))
    created = json.loads(body_of("bitbucket-cloud/repo_push_tag_created.json"))
    base["push"]["changes"].append(created["push"]["changes"][0])
    body = json.dumps(base).encode()
    resp = await gateway.hook(
        "bb", body, signed("bb", body, "repo:push", **{"X-Request-UUID": "u1"})
    )
    assert resp.status == 202
    assert len((await resp.json())["event_ids"]) == 2
    first, second = await gateway.events.get(), await gateway.events.get()
    assert (first["data"]["branch"], second["data"]["tag"]) == ("master", "feature/x")
    assert second["type"] == "dev.relay.git.tag"


async def test_registry_push_envelope(gateway: Harness) -> None:
    body = body_of("registry/envelope_push.json")
    resp = await gateway.hook("reg", body, signed("reg", body))
    assert resp.status == 202, await resp.text()
    got = await gateway.events.get()
    envelope_checks(got, "registry.push", "reg")
    assert got["data"] == {
        "receiver": "reg",
        "registry_event_id": "asdf-asdf-asdf-asdf-0",
        "repository": "library/test",
        "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
        "media_type": "application/vnd.docker.distribution.manifest.v2+json",
        "url": "https://example.com/v2/library/test/manifests/sha256:"
        "c3b3692957d439ac1928219a83fac91e7bf96c153725526874673ae1f2023f8d5",
        "actor": "test-actor",
        "source": "hostname.local:port",
    }
    assert await gateway.events.empty()  # the two layer pushes are not published
    again = await gateway.hook("reg", body, signed("reg", body))
    assert again.status == 200 and (await again.json())["duplicate"] is True
    assert await gateway.events.empty()


async def test_registry_pull_is_ignored_with_200(gateway: Harness) -> None:
    body = body_of("registry/envelope_pull.json")
    resp = await gateway.hook("reg", body, signed("reg", body))
    assert resp.status == 200
    assert "ignored" in await resp.json()
    assert await gateway.events.empty()


@pytest.mark.parametrize(
    ("name", "kind", "ns", "obj", "severity", "reason", "revision"),
    [
        (
            "flux/event_kustomization_error.json",
            "Kustomization",
            "apps",
            "webapp",
            "error",
            "ValidationFailed",
            "main/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        ),
        (
            "flux/event_kustomization_progressing.json",
            "Kustomization",
            "flux-system",
            "my-app-kustomization",
            "info",
            "Progressing",
            "main@sha1:07a684d59d1bc9a58e0c0d07ed480812b2b9a29e",
        ),
        (
            "flux/event_gitrepository_hmac_test.json",
            "GitRepository",
            "gitops-system",
            "webapp",
            "info",
            "reason",
            None,
        ),
    ],
)
async def test_flux_events(
    gateway: Harness,
    name: str,
    kind: str,
    ns: str,
    obj: str,
    severity: str,
    reason: str,
    revision: str | None,
) -> None:
    body = body_of(name)
    resp = await gateway.hook("flux", body, signed("flux", body))
    assert resp.status == 202, await resp.text()
    got = await gateway.events.get()
    envelope_checks(got, "flux.event", "flux")
    payload, data = json.loads(body), got["data"]
    assert data["involved_object"]["kind"] == kind
    assert data["involved_object"]["namespace"] == ns
    assert data["involved_object"]["name"] == obj
    assert (data["severity"], data["reason"]) == (severity, reason)
    assert data["message"] == payload["message"]
    assert data.get("revision") == revision
    assert data["reporting_controller"] == payload["reportingController"]
    assert data["metadata"] == payload["metadata"]
    assert data["timestamp"].startswith(payload["timestamp"].removesuffix("Z"))


def _delivery(receiver: str) -> dict[str, str]:
    import uuid

    header = {
        "gh": "X-GitHub-Delivery",
        "gl": "Idempotency-Key",
        "bb": "X-Request-UUID",
        "bbs": "X-Request-Id",
    }.get(receiver)
    return {header: str(uuid.uuid4())} if header else {}
