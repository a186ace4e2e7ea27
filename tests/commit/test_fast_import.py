"""The commit the worker makes with ``git fast-import``, checked with the real git: every path
arrives exactly as named (quoting), removals remove, and the parent and identity are as asked."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from workers.commit.git import fast_import_stream

IDENT = ("Relay Bot <relay@example.invalid>", "Relay Bot <relay@example.invalid>")
ODD_PATHS = [
    "plain/file.yaml",
    "with space/a b.yaml",
    'quote"d/x.yaml',
    "back\\slash/x.yaml",
    "tab\there.yaml",
    "ünïcode/ß.yaml",
    '"leading-quote.yaml',
    '"whole"',
    "new\nline.yaml",
]


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin,
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return done.stdout.decode()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "--quiet", "--initial-branch=main")
    return tmp_path


def tree_of(repo: Path, rev: str = "main") -> dict[str, str]:
    out = git(repo, "ls-tree", "-r", "-z", rev)  # <mode> <type> <sha>\t<path>, unquoted
    entries = (e.split("\t", 1) for e in out.split("\0") if e)
    return {path: git(repo, "cat-file", "blob", meta.split()[2]) for meta, path in entries}


def test_every_path_arrives_as_named_and_removals_remove(repo: Path) -> None:
    files: dict[str, bytes | None] = {p: f"body of {p}\n".encode() for p in ODD_PATHS}
    first = fast_import_stream("refs/heads/main", None, IDENT, "first\n", files)
    git(repo, "fast-import", "--quiet", "--done", "--date-format=now", stdin=first)
    assert tree_of(repo) == {p: f"body of {p}\n" for p in ODD_PATHS}

    gone = {p: None for p in ODD_PATHS[1:]}
    second = fast_import_stream(
        "refs/heads/main", "refs/heads/main^0", IDENT, "second\n", {**gone, "new.yaml": b"n\n"}
    )
    git(repo, "fast-import", "--quiet", "--done", "--date-format=now", stdin=second)
    assert tree_of(repo) == {"plain/file.yaml": "body of plain/file.yaml\n", "new.yaml": "n\n"}
    parents = git(repo, "log", "-1", "--format=%P %an <%ae> %cn <%ce>%n%B", "main")
    head_line, message = parents.split("\n", 1)
    assert head_line.split(" ", 1)[0] == git(repo, "rev-parse", "main~1").strip()
    assert head_line.split(" ", 1)[1] == f"{IDENT[0]} {IDENT[1]}"
    assert message.strip() == "second"


def test_a_truncated_stream_changes_nothing(repo: Path) -> None:
    stream = fast_import_stream("refs/heads/main", None, IDENT, "msg\n", {"a.yaml": b"a\n"})
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "fast-import", "--quiet", "--done", stdin=stream[: len(stream) // 2])
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "rev-parse", "--verify", "--quiet", "refs/heads/main")


def test_files_of_one_name_are_stored_as_deltas_of_each_other(repo: Path) -> None:
    """fast-import deltas a blob only against the one it wrote before: every app's
    ``deployment.yaml`` must come in a row, or a 50-app commit is pushed (and kept on the
    remote) without deltas, twice the size."""
    rng = random.Random(7)
    kinds = {name: rng.randbytes(1500).hex().encode() for name in ("deployment", "service")}
    files: dict[str, bytes | None] = {
        f"apps/a{i:02d}/{name}.yaml": body + b"\napp: %d\n" % i
        for i in range(20)
        for name, body in kinds.items()
    }
    stream = fast_import_stream("refs/heads/main", None, IDENT, "apps\n", files)
    import_args = ("fast-import", "--quiet", "--done", "--date-format=now", "--depth=10")
    git(repo, "-c", "fastimport.unpackLimit=1", *import_args, stdin=stream)
    found = git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objecttype) %(deltabase)")
    blobs = [line.split() for line in found.splitlines() if line.startswith("blob")]
    deltas = [base for _, base in blobs if set(base) != {"0"}]
    assert len(blobs) == 40
    assert len(deltas) == 36  # all but the first of each name, and of each chain of 10
