"""Build contexts: inline files never escape the context; Git sources; the source digest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.errors import Permanent
from relay.events.deploy import GitSource, Source
from tests.build.harness import push_web_app
from tests.support.gitserver import GitServer
from workers.build.context import (
    Limits,
    inline_context,
    source_digest,
    tree_entries,
    write_files,
)
from workers.build.gitsource import git_context, split_credentials
from workers.build.proc import ArgvRecorder

LIMITS = Limits(max_context_bytes=10 * 1024 * 1024, max_file_bytes=1024 * 1024)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the context that nothing may ever be written into."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "keep.txt").write_text("original")
    return path


@pytest.fixture
def context(tmp_path: Path) -> Path:
    path = tmp_path / "context"
    path.mkdir()
    return path


def _listing(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in path.iterdir()}


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "./x", "a//x", "a\\..\\x", ""])
def test_bad_names_refused_before_any_write(name: str, context: Path, outside: Path) -> None:
    files = {"good.txt": b"fine", name: b"evil"}
    with pytest.raises(Permanent) as caught:
        write_files(context, files)
    assert caught.value.reason == "invalid_source"
    assert list(context.iterdir()) == []  # not even the good file
    assert _listing(outside) == {"keep.txt": "original"}
    assert not Path("/etc/x").exists()


def test_symlinked_directory_is_not_followed(context: Path, outside: Path) -> None:
    (context / "sub").symlink_to(outside)
    with pytest.raises(Permanent) as caught:
        write_files(context, {"sub/x": b"evil"})
    assert "link" in caught.value.detail
    assert _listing(outside) == {"keep.txt": "original"}


def test_symlinked_file_is_not_overwritten(context: Path, outside: Path) -> None:
    (context / "f").symlink_to(outside / "keep.txt")
    (context / "dangling").symlink_to(outside / "new.txt")
    for name in ("f", "dangling"):
        with pytest.raises(Permanent):
            write_files(context, {name: b"evil"})
    assert _listing(outside) == {"keep.txt": "original"}


def test_symlink_deep_in_the_path(context: Path, outside: Path) -> None:
    (context / "a" / "b").mkdir(parents=True)
    (context / "a" / "b" / "c").symlink_to(outside)
    with pytest.raises(Permanent):
        write_files(context, {"a/b/c/d/e.txt": b"evil"})
    assert _listing(outside) == {"keep.txt": "original"}
    assert not (outside / "d").exists()


def test_context_root_itself_a_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "ctx-link"
    link.symlink_to(outside)
    with pytest.raises(OSError):
        write_files(link, {"x": b"evil"})
    assert _listing(outside) == {"keep.txt": "original"}


def test_nested_files_are_written(context: Path) -> None:
    write_files(context, {"app/main.py": b"print(1)\n", "app/static/i.html": b"<p>", "R": b"r"})
    assert (context / "app" / "main.py").read_bytes() == b"print(1)\n"
    assert (context / "app" / "static" / "i.html").read_bytes() == b"<p>"
    assert oct((context / "R").stat().st_mode & 0o777) == "0o644"


def test_file_and_directory_with_one_name_conflict(context: Path) -> None:
    with pytest.raises(Permanent) as caught:
        write_files(context, {"a": b"file", "a/b": b"nested"})
    assert caught.value.reason == "invalid_source"


async def test_inline_size_caps_refuse_before_writing(tmp_path: Path) -> None:
    limits = Limits(max_context_bytes=100, max_file_bytes=60)
    big_file = Source(files={"a": "x" * 61}, dockerfile="FROM scratch\n")
    with pytest.raises(Permanent) as caught:
        await inline_context(big_file, tmp_path, limits, None)
    assert caught.value.reason == "context_too_large" and "per file" in caught.value.detail
    too_many = Source(files={"a": "x" * 50, "b": "y" * 50}, dockerfile="FROM scratch\n")
    with pytest.raises(Permanent) as caught:
        await inline_context(too_many, tmp_path, limits, None)
    assert caught.value.reason == "context_too_large"
    assert list(tmp_path.iterdir()) == []  # no context directory was even made


async def test_inline_context_layout_and_digest(tmp_path: Path) -> None:
    source = Source(files={"b.txt": "B", "a/x.txt": "A"}, dockerfile="FROM scratch\nCOPY . /\n")
    (tmp_path / "one").mkdir()
    built = await inline_context(source, tmp_path / "one", LIMITS, None)
    assert built.dockerfile == tmp_path / "one" / "relay.Dockerfile"  # outside the context
    assert sorted(p.name for p in built.context_dir.iterdir()) == ["a", "b.txt"]
    (tmp_path / "two").mkdir()
    reordered = Source(files={"a/x.txt": "A", "b.txt": "B"}, dockerfile=source.dockerfile)
    again = await inline_context(reordered, tmp_path / "two", LIMITS, None)
    assert again.source_digest == built.source_digest


def test_source_digest_covers_names_contents_dockerfile_platform() -> None:
    base = source_digest([("a", b"1"), ("b", b"2")], b"FROM scratch", None)
    assert base == source_digest([("b", b"2"), ("a", b"1")], b"FROM scratch", None)
    assert base != source_digest([("a", b"1"), ("c", b"2")], b"FROM scratch", None)
    assert base != source_digest([("a", b"1"), ("b", b"3")], b"FROM scratch", None)
    assert base != source_digest([("a", b"1"), ("b", b"2")], b"FROM scratch\n", None)
    assert base != source_digest([("a", b"1"), ("b", b"2")], b"FROM scratch", "linux/arm64")
    # no ambiguity between a name/content boundary
    assert source_digest([("ab", b"c")], b"", None) != source_digest([("a", b"bc")], b"", None)


def test_tree_entries_refuse_links_leaving_the_context(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("f")
    (root / "inside").symlink_to("d/f")
    assert dict(tree_entries(root, 10_000))["inside"] == b"link\0d/f"
    (root / "escape").symlink_to("../outside/keep.txt")
    with pytest.raises(Permanent) as caught:
        tree_entries(root, 10_000)
    assert "outside the context" in caught.value.detail
    os.unlink(root / "escape")
    with pytest.raises(Permanent) as caught:
        tree_entries(root, 1)
    assert caught.value.reason == "context_too_large"


def test_split_credentials() -> None:
    clean, header = split_credentials("https://bot:t%40ken@git.example/r.git")
    assert clean == "https://git.example/r.git"
    assert header is not None and header.startswith("Basic ")
    assert split_credentials("https://git.example/r.git") == ("https://git.example/r.git", None)
    assert split_credentials("git@host:r.git") == ("git@host:r.git", None)


async def test_git_context_fetches_ref_and_path(git_server: GitServer, tmp_path: Path) -> None:
    sha = push_web_app(git_server, tmp_path)
    recorder = ArgvRecorder()
    lines: list[str] = []
    for ref in ("main", sha):
        workdir = tmp_path / f"w-{ref[:6]}"
        workdir.mkdir()
        source = GitSource(url=git_server.authed_url(), ref=ref, path="apps/web")
        built = await git_context(
            source, workdir, max_bytes=10**6, platform=None, on_line=lines.append, recorder=recorder
        )
        assert sorted(p.name for p in built.context_dir.iterdir()) == ["Dockerfile", "index.html"]
        assert not (workdir / "repo" / ".git").exists()
    flat = " ".join(" ".join(argv) for argv in recorder.seen)
    assert git_server.password not in flat
    assert git_server.url in flat


async def test_git_context_refuses_link_path_and_bad_password(
    git_server: GitServer, tmp_path: Path
) -> None:
    push_web_app(git_server, tmp_path)
    (tmp_path / "a").mkdir()
    linked = GitSource(url=git_server.authed_url(), ref="main", path="apps/link")
    with pytest.raises(Permanent) as caught:
        await git_context(linked, tmp_path / "a", max_bytes=10**6, platform=None, on_line=print)
    assert caught.value.reason == "invalid_source"
    (tmp_path / "b").mkdir()
    wrong = GitSource(url=git_server.authed_url(password="wrong"), ref="main", path="apps/web")
    with pytest.raises(Permanent) as caught:
        await git_context(wrong, tmp_path / "b", max_bytes=10**6, platform=None, on_line=print)
    assert caught.value.reason == "git_fetch_failed"
    assert "wrong" not in caught.value.detail
