"""The demo's inputs: a GitHub-shaped push and a tiny web app built from inline files."""

from __future__ import annotations

from typing import Any

ZERO = "0" * 40


def github_push(*, repository: str, clone_url: str, after: str) -> dict[str, Any]:
    """A push of one commit to main, shaped like GitHub's push payload (the fields we read)."""
    return {
        "ref": "refs/heads/main",
        "before": "1" * 40,
        "after": after,
        "created": False,
        "deleted": False,
        "forced": False,
        "compare": f"https://github.com/{repository}/compare/111111...{after[:6]}",
        "commits": [
            {
                "id": after,
                "message": "Update the homepage",
                "timestamp": "2026-11-26T10:00:00Z",
                "author": {"name": "Demo", "email": "demo@example.com", "username": "demo"},
                "added": [],
                "removed": [],
                "modified": ["index.html"],
            }
        ],
        "head_commit": {"id": after, "message": "Update the homepage"},
        "repository": {
            "id": 1,
            "name": repository.rsplit("/", maxsplit=1)[-1],
            "full_name": repository,
            "clone_url": clone_url,
            "default_branch": "main",
            "owner": {
                "name": repository.split("/", maxsplit=1)[0],
                "login": repository.split("/", maxsplit=1)[0],
            },
        },
        "pusher": {"name": "demo", "email": "demo@example.com"},
        "sender": {"login": "demo", "id": 1},
    }


APP_FILES = {
    "index.html": "<!doctype html><title>hello</title><h1>Hello from the relay demo</h1>\n",
    "README.txt": "A static page, built FROM scratch by the relay's build worker.\n",
}
APP_DOCKERFILE = (
    "FROM scratch\nCOPY index.html README.txt /site/\nLABEL org.opencontainers.image.title=hello\n"
)
