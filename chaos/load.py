"""Signed requests to the gateway, each remembered with what it was answered.

A ``Sender`` posts deploys (``POST /deploy``, relay signature) and pushes (GitHub HMAC, GitLab
token) and records every answer. ``deploy`` retries through a dead gateway (connection refused),
503 and 429 until its deadline, each try freshly signed (a signature is accepted once) and
carrying the same ``Idempotency-Key``; ``hook_once`` sends once and records the status, which is
what a load during a broker restart needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from relay.demo.samples import github_push
from relay.signing import sign_headers

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class Accepted:
    """One request the gateway answered 202, with the ids it gave."""

    kind: str  # "deploy" or "hook"
    key: str  # the client's own id for it (an app@version, or a delivery id)
    event_ids: list[str]
    deployment_id: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class Tally:
    """What the gateway answered, and how the client fared."""

    statuses: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    ambiguous: int = 0  # sent, but the connection broke before an answer: outcome unknown
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # key, status, body
    answers: list[tuple[float, int]] = field(default_factory=list)  # (wall clock, status; 0: none)
    no_retry_after: int = 0  # 503s without a Retry-After header

    def count(self, status: int) -> None:
        self.statuses[status] += 1
        self.answers.append((time.time(), status))


class Sender:
    def __init__(
        self,
        base_url: str,
        *,
        deploy_secret: str,
        github_secret: str | None = None,
        gitlab_token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.deploy_secret = deploy_secret
        self.github_secret = github_secret
        self.gitlab_token = gitlab_token
        self.tally = Tally()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Sender as an async context manager"
        return self._session

    # --- deploys ---------------------------------------------------------------------------

    async def deploy(self, request: dict[str, Any], *, deadline: float) -> Accepted | None:
        """POST /deploy until 202 (or a final refusal, or the deadline); None when not taken."""
        key = f"{request['app']}@{request['version']}"
        idempotency = str(uuid.uuid4())
        body = json.dumps(request).encode()
        while time.monotonic() < deadline:
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": idempotency,
                **sign_headers(self.deploy_secret, body),
            }
            answer = await self._post("/deploy", body, headers, key)
            if answer is None:
                await asyncio.sleep(0.2)
                continue
            status, data = answer
            if status in (200, 202):
                return self._accept("deploy", key, data)
            if status not in RETRY_STATUSES:
                self.tally.refused.append((key, status, json.dumps(data)[:300]))
                return None
            await asyncio.sleep(0.2)
        return None

    async def deploy_once(self, request: dict[str, Any]) -> int | None:
        """One signed POST /deploy; its status (None: no answer)."""
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json", **sign_headers(self.deploy_secret, body)}
        key = f"{request['app']}@{request['version']}"
        answer = await self._post("/deploy", body, headers, key)
        if answer is None:
            return None
        if answer[0] == 202:
            self._accept("deploy", key, answer[1])
        return answer[0]

    def _accept(self, kind: str, key: str, data: dict[str, Any]) -> Accepted:
        ids = data.get("event_ids") or ([data["event_id"]] if data.get("event_id") else [])
        found = Accepted(kind, key, list(ids), deployment_id=data.get("deployment_id"))
        self.tally.accepted.append(found)
        return found

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str], key: str
    ) -> tuple[int, dict[str, Any]] | None:
        """(status, JSON body) or None when no answer came (the gateway is down or died)."""
        try:
            async with self.session.post(self.base_url + path, data=body, headers=headers) as r:
                self.tally.count(r.status)
                if r.status == 503 and not r.headers.get("Retry-After"):
                    self.tally.no_retry_after += 1
                try:
                    data = await r.json(content_type=None)
                except (json.JSONDecodeError, aiohttp.ContentTypeError):
                    data = {}
                if r.status >= 500 and r.status != 503:
                    self.tally.refused.append((key, r.status, json.dumps(data)[:300]))
                return r.status, data if isinstance(data, dict) else {}
        except aiohttp.ClientConnectorError:
            self.tally.connection_errors += 1  # nothing listened: certainly not taken
            self.tally.answers.append((time.time(), 0))
            return None
        except (aiohttp.ClientError, TimeoutError):
            self.tally.ambiguous += 1  # sent, no answer: it may have been published
            self.tally.answers.append((time.time(), 0))
            return None

    # --- webhooks --------------------------------------------------------------------------

    async def github_push_once(self, delivery: str, *, secret: str | None = None) -> int | None:
        """One signed GitHub push (``secret`` overrides, e.g. a wrong one); the status."""
        payload = github_push(
            repository="chaos/homelab",
            clone_url="https://github.com/chaos/homelab.git",
            after=hashlib.sha1(delivery.encode()).hexdigest(),  # noqa: S324 - a fake commit id
        )
        body = json.dumps(payload).encode()
        key = (secret or self.github_secret or "").encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        }
        return await self._hook("/hook/gh", body, headers, delivery)

    async def gitlab_push_once(self, delivery: str, *, token: str | None = None) -> int | None:
        payload = {
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": hashlib.sha1(delivery.encode()).hexdigest(),  # noqa: S324
            "total_commits_count": 1,
            "user_username": "chaos",
            "project": {
                "path_with_namespace": "chaos/homelab",
                "git_http_url": "https://gitlab.example.com/chaos/homelab.git",
            },
        }
        headers = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Event-UUID": delivery,
            "X-Gitlab-Token": token or self.gitlab_token or "",
        }
        return await self._hook("/hook/gl", json.dumps(payload).encode(), headers, delivery)

    async def _hook(self, path: str, body: bytes, headers: dict[str, str], key: str) -> int | None:
        answer = await self._post(path, body, headers, key)
        if answer is None:
            return None
        status, data = answer
        if status == 202:
            self._accept("hook", key, data)
        return status
