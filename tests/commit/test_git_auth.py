"""How the worker hands credentials to git: never in argv or the URL, scoped, scrubbed."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

import pytest

from relay.errors import ConfigError
from relay.settings import GitOpsSettings
from workers.commit.git import GitEnv, parse_remote, ssh_command


def gitops(tmp_path: Path, **values: object) -> GitOpsSettings:
    return GitOpsSettings.model_validate({"url": "https://git.example.com/o/r.git", **values})


def test_credentials_in_the_url_are_taken_out(tmp_path: Path) -> None:
    remote = parse_remote(gitops(tmp_path, url="https://bot:s3cr%40t@git.example.com:8443/o/r.git"))
    assert remote.url == "https://git.example.com:8443/o/r.git"
    assert (remote.username, remote.password) == ("bot", "s3cr@t")


def test_the_token_file_wins_and_the_header_is_scoped_to_the_origin(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123456\n")
    settings = gitops(tmp_path, username="relay", token_file=str(token))
    remote = parse_remote(settings)
    genv = GitEnv(settings, remote, tmp_path)
    env = genv.env
    pairs = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    basic = base64.b64encode(b"relay:tok-123456").decode()
    assert pairs["http.https://git.example.com/.extraHeader"] == f"Authorization: Basic {basic}"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    scrubbed = genv.scrub(f"fatal: tok-123456 and {basic} and https://u:p@h/x")
    assert "tok-123456" not in scrubbed
    assert basic not in scrubbed
    assert "u:p@" not in scrubbed


def test_ssh_uses_the_deploy_key_and_only_known_hosts(tmp_path: Path) -> None:
    settings = gitops(
        tmp_path,
        url="git@github.com:o/r.git",
        ssh_key_file=str(tmp_path / "deploy key"),
        known_hosts_file=str(tmp_path / "known_hosts"),
    )
    remote = parse_remote(settings)
    assert remote.is_ssh
    words = shlex.split(GitEnv(settings, remote, tmp_path).env["GIT_SSH_COMMAND"])
    options = {words[i + 1] for i, w in enumerate(words) if w == "-o"}
    assert {"StrictHostKeyChecking=yes", "BatchMode=yes", "IdentitiesOnly=yes"} <= options
    assert f"UserKnownHostsFile={tmp_path}/known_hosts" in options
    assert words[words.index("-i") + 1] == f"{tmp_path}/deploy key"


def test_ssh_without_known_hosts_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="known_hosts"):
        ssh_command(gitops(tmp_path, url="ssh://git@example.com/o/r.git"))
