"""Hypothesis strategies for the API fuzz tests: provider payloads, mutated and hostile bodies.

Bodies start from the real provider fixtures in shared/fixtures/webhooks and get 1-3 mutations
(a node replaced by random JSON, or removed), weighted towards the fields the receivers read;
some are random JSON of any type, some are hostile bytes (deep nesting, huge numbers, lone
surrogates, invalid UTF-8).
"""

from __future__ import annotations

import copy
import json
import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from relay.events.deploy import APP_NAME, IMAGE_REF, IMAGE_TAG
from tests.gateway.conftest import FIXTURES, REGISTRY_TYPE, TYPES

FORM = "application/x-www-form-urlencoded"
EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "40"))
# make test (and CI) draws the same examples every run; make fuzz (RELAY_FUZZ_RANDOM=1) new ones
RANDOM = os.environ.get("RELAY_FUZZ_RANDOM") == "1"
# receiver type -> the headers its signature (or token) travels in
SIGNATURE_HEADERS = {
    "github": ["X-Hub-Signature-256", "X-Hub-Signature"],
    "gitlab": ["X-Gitlab-Token", "webhook-signature"],
    "gitea": ["X-Gitea-Signature"],
    "forgejo": ["X-Forgejo-Signature", "X-Gitea-Signature"],
    "bitbucket": ["X-Hub-Signature"],
    "bitbucket-server": ["X-Hub-Signature"],
    "generic-hmac": ["X-Signature"],
    "flux": ["X-Signature"],
    "generic": ["Authorization"],
    "registry": ["Authorization"],
}
DELETE = object()
Path = tuple[str | int, ...]

# receiver -> (fixture, event header value) it is seeded from
SEEDS: dict[str, list[tuple[str, str]]] = {
    "gh": [
        ("github/push.json", "push"),
        ("github/ping.json", "ping"),
        ("github/push_tag_created.json", "push"),
        ("github/pull_request_opened.json", "pull_request"),
    ],
    "gl": [
        ("gitlab/push.json", "Push Hook"),
        ("gitlab/tag_push.json", "Tag Push Hook"),
        ("gitlab/merge_request_open.json", "Merge Request Hook"),
    ],
    "gt": [("gitea/push.json", "push"), ("gitea/pull_request_edited.json", "pull_request")],
    "fj": [("gitea/push.json", "push"), ("gitea/create_tag.json", "create")],
    "bb": [
        ("bitbucket-cloud/repo_push.json", "repo:push"),
        ("bitbucket-cloud/repo_push_tag_created.json", "repo:push"),
    ],
    "bbs": [
        ("bitbucket-server/repo_refs_changed.json", "repo:refs_changed"),
        ("bitbucket-server/repo_refs_changed.json", "diagnostics:ping"),
    ],
    "gh2": [("github/push.json", "push"), ("github/release_published.json", "release")],
    "any": [("github/push.json", "push"), ("gitlab/push.json", "push")],
    "flux": [
        ("flux/event_kustomization_error.json", ""),
        ("flux/event_gitrepository_hmac_test.json", ""),
    ],
    "reg": [("registry/envelope_push.json", ""), ("registry/envelope_pull.json", "")],
}
HOT = {
    "ref", "before", "after", "repository", "full_name", "clone_url", "push", "changes", "new",
    "old", "target", "hash", "name", "type", "refId", "fromHash", "toHash", "project", "key",
    "slug", "links", "clone", "object_kind", "path_with_namespace", "git_http_url",
    "events", "action", "tag", "digest", "mediaType", "id", "involvedObject", "kind",
    "severity", "metadata", "pusher", "commits", "total_commits", "total_commits_count",
    "user_username", "actor", "zen", "hook_id", "timestamp", "reason", "message",
}  # fmt: skip
NASTY_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"{",
    b"\xff\xfe\x00{",
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"n": ' + b"9" * 5000 + b"}",
    b'{"n": NaN, "m": -Infinity}',
    b'{"s": "\\ud800"}',
    b'{"\\udfff": 1}',
    b'{"a": 1, "a": 2}',
    b"\xef\xbb\xbf{}",
]
SURROGATE = st.sampled_from(["\ud800", "\udfff", "a\udcff"])
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    SURROGATE,
)
JSON: st.SearchStrategy[Any] = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


def fuzz_budget(*, suppress_health_check: list[HealthCheck]) -> settings:
    """The bound of every fuzz test: a fixed number of examples, a deadline per example."""
    return settings(
        max_examples=EXAMPLES,
        deadline=10_000,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=suppress_health_check,
    )


def _seed(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def walk(value: Any, prefix: Path = ()) -> Iterator[Path]:
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from walk(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from walk(inner, (*prefix, index))


def replace(value: Any, path: Path, new: Any) -> Any:
    """``value`` with the node at ``path`` replaced by ``new`` (removed for ``DELETE``)."""
    if not path:
        return {} if new is DELETE else new
    parent = value
    for part in path[:-1]:
        parent = parent[part]
    if new is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    value = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(walk(value))
        hot = [p for p in paths if p and p[-1] in HOT]
        pick_hot = bool(hot) and draw(st.booleans())
        path = draw(st.sampled_from(hot) if pick_hot else st.sampled_from(paths))
        value = replace(value, path, draw(JSON | st.just(DELETE)))
    return value


def encode(payload: Any, *, ascii_only: bool = True) -> bytes:
    text = json.dumps(payload, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def hook_bodies(draw: st.DrawFn, receiver: str) -> tuple[bytes, str, str]:
    """(body, content type, event header value) a sender of this receiver type might send."""
    fixture, event = draw(st.sampled_from(SEEDS[receiver]))
    kind = draw(st.sampled_from(["mutated", "mutated", "seed", "json", "nasty"]))
    if kind == "nasty":
        body = draw(st.sampled_from(NASTY_BODIES))
    else:
        payload = {
            "seed": lambda: _seed(fixture),
            "mutated": lambda: draw(mutated(_seed(fixture))),
            "json": lambda: draw(JSON),
        }[kind]()
        body = encode(payload, ascii_only=draw(st.booleans()))
    content_type = REGISTRY_TYPE if TYPES[receiver] == "registry" else "application/json"
    if TYPES[receiver] in {"github", "gitea", "forgejo"} and draw(st.booleans()):
        content_type = "application/x-www-form-urlencoded"
        body = urllib.parse.urlencode({"payload": body.decode("utf-8", "replace")}).encode()
    event = draw(st.sampled_from([event, event, event, ""]) | HEADER_TEXT)
    return body, content_type, event


LABELS = st.from_regex(r"\A[a-z0-9](?:[-a-z0-9]{0,38}[a-z0-9])?\Z")  # APP_NAME, at most 40
APP_NAMES = st.one_of(
    st.from_regex(APP_NAME, fullmatch=True).filter(lambda s: len(s) <= 45),
    st.text(max_size=50),
)
DELETE_NAMES = st.one_of(LABELS, LABELS, st.text(min_size=1, max_size=50))
VERSIONS = st.from_regex(IMAGE_TAG, fullmatch=True) | st.text(max_size=10)
IMAGES = st.from_regex(IMAGE_REF, fullmatch=True) | st.text(max_size=30) | SURROGATE
FILE_NAMES = st.sampled_from(["app.py", "Dockerfile", "../x", "/etc/passwd", "a//b", "a/./b"])
SOURCES = st.one_of(
    st.fixed_dictionaries(
        {"files": st.dictionaries(FILE_NAMES | st.text(max_size=10), st.text(max_size=20))},
        optional={"dockerfile": st.text(max_size=20) | st.none(), "git": JSON},
    ),
    st.fixed_dictionaries(
        {"git": st.fixed_dictionaries({"url": st.sampled_from(["https://x/y.git", "-u", ""])})},
        optional={"files": JSON},
    ),
    JSON,
)
ENV = st.dictionaries(
    st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,5}\Z") | st.text(max_size=5), JSON | st.text()
)


VALID_DEPLOYS = st.fixed_dictionaries(
    {
        "app": LABELS,
        "version": st.from_regex(IMAGE_TAG, fullmatch=True),
        "image": st.from_regex(IMAGE_REF, fullmatch=True),
    },
    optional={
        "port": st.integers(1, 65535),
        "replicas": st.integers(0, 20),
        "env": st.dictionaries(
            st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z"), st.text() | SURROGATE
        ),
        "health_path": st.sampled_from(["/healthz", "/", "/a/b?c=d"]),
        "callback_url": st.sampled_from(["https://n8n.example.com/webhook-waiting/42", None]),
    },
)


@st.composite
def deploy_payloads(draw: st.DrawFn) -> Any:
    """Valid requests (a third), near-valid ones with random fields, and random JSON."""
    roll = draw(st.integers(0, 8))
    if roll < 3:
        return draw(VALID_DEPLOYS)
    if roll == 3:
        return draw(JSON)
    payload = draw(
        st.fixed_dictionaries(
            {"app": APP_NAMES, "version": VERSIONS},
            optional={
                "image": IMAGES,
                "source": SOURCES,
                "port": st.integers(-5, 70_000) | JSON,
                "replicas": st.integers(-1, 25) | JSON,
                "env": ENV,
                "health_path": st.sampled_from(["/healthz", "no-slash", "/a b"]) | JSON,
                "resources": st.fixed_dictionaries({}, optional={"cpu_limit": JSON}) | JSON,
                "callback_url": st.sampled_from(["https://n8n.example.com/w/1", "ftp://x", ""]),
                "unknown": JSON,
            },
        )
    )
    if draw(st.integers(0, 3)) == 0:  # a prebuilt image, the commonest request, made valid
        payload["image"] = "127.0.0.1:5000/hello:v1"
        payload.pop("source", None)
    return payload
