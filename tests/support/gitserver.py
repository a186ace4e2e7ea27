"""A real Git smart-HTTP server for tests: nginx (basic auth) -> fcgiwrap -> git http-backend.

    gs = GitServer(tmp_path / "git")   # bare homelab.git on main with a README commit
    gs.start()                          # returns once an authenticated info/refs answers 200
    gs.url          # http://127.0.0.1:PORT/homelab.git (no credentials in it)
    gs.username, gs.password, gs.token_file, gs.bare_path
    gs.foreign_push({"apps/x.yaml": "..."}, "someone else's change")   # a concurrent pusher
    gs.read_file("apps/x.yaml"), gs.log(5), gs.head()
    gs.stop(); gs.start()               # same port, same repository (fault tests)
    with GitServer(...) as gs: ...      # start, then close (stop, remove an own dir)

Everything lives under one directory: the repository, htpasswd, nginx.conf and its pid/temp/log
files, fcgiwrap's socket. ``receive.denyNonFastForwards`` is on by default, so even a forced
non-fast-forward push is refused by the server itself, like a protected branch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support._http import http_status
from tests.support._procs import (
    LOOPBACK,
    GroupProcess,
    LoopbackService,
    ServiceError,
    clean_env,
    file_tail,
    require_binary,
    wait_for,
)

REPO_NAME = "homelab.git"
INITIAL_README = "# homelab\n\nGitOps repository used by the relay's tests.\n"
SERVER_IDENTITY = ("Repo Bootstrap", "bootstrap@example.invalid")
FOREIGN_IDENTITY = ("Someone Else", "someone.else@example.invalid")


def git_http_backend_path() -> str:
    exec_path = subprocess.run(
        [require_binary("git"), "--exec-path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    backend = Path(exec_path) / "git-http-backend"
    if not backend.is_file():
        raise ServiceError(f"git-http-backend not found at {backend}")
    return str(backend)


def git_client_env(home: Path | str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a git client that never prompts and ignores the machine's git config."""
    env = clean_env(drop_prefixes=("GIT_",))
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(home),
            "LC_ALL": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


def identity_env(identity: tuple[str, str]) -> dict[str, str]:
    """``GIT_AUTHOR_*`` and ``GIT_COMMITTER_*`` for one (name, email)."""
    name, email = identity
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


@dataclass(frozen=True)
class LogEntry:
    sha: str
    author_name: str
    author_email: str
    subject: str
    body: str


class GitServer(LoopbackService):
    """``homelab.git`` over smart HTTP with basic auth on its own loopback port."""

    kind = "git server"
    dir_prefix = "relay-git-"
    secret_name = "token"

    def __init__(
        self,
        base_dir: str | Path | None = None,
        *,
        username: str = "relay-bot",
        password: str | None = None,
        port: int | None = None,
        deny_non_fast_forwards: bool = True,
        fcgi_workers: int = 8,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(
            base_dir,
            username=username,
            password=password,
            port=port,
            startup_timeout=startup_timeout,
        )
        self.token_file = self.secret_file
        self.deny_non_fast_forwards = deny_non_fast_forwards
        self.fcgi_workers = fcgi_workers  # concurrent git requests served; more wait in line
        self.project_root = self.base_dir / "repos"
        self.bare_path = self.project_root / REPO_NAME
        self.nginx_conf = self.base_dir / "nginx.conf"
        self.nginx_log = self.base_dir / "nginx-error.log"
        self.fcgi_socket = self.base_dir / "fcgiwrap.sock"
        if len(str(self.fcgi_socket)) > 100:  # AF_UNIX paths stop at 107 bytes
            self._sock_dir: str | None = tempfile.mkdtemp(prefix="relay-fcgi-")
            self.fcgi_socket = Path(self._sock_dir) / "fcgiwrap.sock"
        else:
            self._sock_dir = None
        self.fcgi_log = self.base_dir / "fcgiwrap.log"
        self.home = self.base_dir / "home"  # HOME for every git command run from here
        self._git = require_binary("git")
        self._nginx = require_binary("nginx")
        self._fcgiwrap = require_binary("fcgiwrap")
        self._backend = git_http_backend_path()
        for d in (self.project_root, self.home, self.base_dir / "nginx-tmp"):
            d.mkdir(parents=True, exist_ok=True)
        self.fresh_repo()

    # --- addresses ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/{REPO_NAME}"

    def authed_url(self, username: str | None = None, password: str | None = None) -> str:
        """The URL with credentials embedded (for test clients only; never log it)."""
        user = self.username if username is None else username
        pw = self.password if password is None else password
        return f"http://{user}:{pw}@{LOOPBACK}:{self.port}/{REPO_NAME}"

    def client_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return git_client_env(self.home, extra)

    # --- repository -------------------------------------------------------------------------

    def git(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        cwd: Path | str | None = None,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run git with this server's quiet client environment (no prompts, no global config)."""
        return subprocess.run(
            [self._git, *args],
            env=self.client_env(env),
            cwd=cwd,
            input=input_text,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def _bare(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.git(
            "--git-dir", str(self.bare_path), *args, env=env, check=check, input_text=input_text
        )

    def fresh_repo(self) -> None:
        """(Re)create the bare repository: branch main, one commit holding README.md."""
        if self.bare_path.exists():
            shutil.rmtree(self.bare_path)
        self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare_path))
        self._bare("config", "http.receivepack", "true")
        self._bare("config", "http.uploadpack", "true")
        self._bare(
            "config",
            "receive.denyNonFastForwards",
            "true" if self.deny_non_fast_forwards else "false",
        )
        blob = self._bare("hash-object", "-w", "--stdin", input_text=INITIAL_README).stdout.strip()
        tree = self._bare("mktree", input_text=f"100644 blob {blob}\tREADME.md\n").stdout.strip()
        ident = identity_env(SERVER_IDENTITY)
        commit = self._bare("commit-tree", tree, "-m", "Initial commit", env=ident).stdout.strip()
        self._bare("update-ref", "refs/heads/main", commit)

    def head(self, ref: str = "main") -> str:
        return self._bare("rev-parse", "--verify", f"{ref}^{{commit}}").stdout.strip()

    def read_file(self, path: str, ref: str = "main") -> str | None:
        """Content of ``path`` at ``ref`` in the bare repository, or None if it is not there."""
        res = self._bare("show", f"{ref}:{path}", check=False)
        if res.returncode != 0:
            return None
        return res.stdout

    def list_files(self, ref: str = "main") -> list[str]:
        return self._bare("ls-tree", "-r", "--name-only", ref).stdout.split()

    def log(self, n: int = 10, ref: str = "main") -> list[LogEntry]:
        """Newest first."""
        sep, end = "\x1f", "\x1e"
        fmt = sep.join(["%H", "%an", "%ae", "%s", "%b"]) + end
        out = self._bare("log", f"-n{n}", f"--format={fmt}", ref).stdout
        entries = []
        for raw in out.split(end):
            rec = raw.strip("\n")
            if not rec:
                continue
            sha, an, ae, subject, body = rec.split(sep)
            entries.append(LogEntry(sha, an, ae, subject, body.strip()))
        return entries

    def foreign_push(
        self,
        files: Mapping[str, str],
        message: str = "Change by someone else",
        *,
        branch: str = "main",
        author: tuple[str, str] = FOREIGN_IDENTITY,
    ) -> str:
        """Clone over HTTP, write ``files``, commit as someone else, push; returns the new sha."""
        if not self.running:
            raise ServiceError("foreign_push needs the git server running")
        ident = identity_env(author)
        with tempfile.TemporaryDirectory(prefix="foreign-", dir=self.base_dir) as tmp:
            work = Path(tmp) / "clone"
            self.git("clone", "--quiet", "--branch", branch, self.authed_url(), str(work))
            for rel, content in files.items():
                target = work / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            self.git("add", "--all", cwd=work)
            self.git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work, env=ident)
            res = self.git(
                "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work, check=False
            )
            if res.returncode != 0:
                raise ServiceError(f"foreign push failed: {res.stderr.strip()}")
            return self.git("rev-parse", "HEAD", cwd=work).stdout.strip()

    # --- lifecycle -------------------------------------------------------------------------

    def _write_nginx_conf(self) -> None:
        b = self.base_dir
        t = b / "nginx-tmp"
        user_line = "user root root;" if os.geteuid() == 0 else ""
        self.nginx_conf.write_text(f"""# generated by tests/support/gitserver.py
daemon off;
master_process on;
worker_processes 1;
{user_line}
pid {b}/nginx.pid;
error_log {self.nginx_log} info;
events {{ worker_connections 128; }}
http {{
    access_log {b}/nginx-access.log;
    client_body_temp_path {t}/client_body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    client_max_body_size 0;
    server {{
        listen {LOOPBACK}:{self.port};
        server_name localhost;
        location / {{
            auth_basic "relay test git";
            auth_basic_user_file {self.htpasswd_path};
            fastcgi_pass unix:{self.fcgi_socket};
            fastcgi_read_timeout 120s;
            fastcgi_param SCRIPT_FILENAME {self._backend};
            fastcgi_param GIT_PROJECT_ROOT {self.project_root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
            fastcgi_param HOME {self.home};
            fastcgi_param PATH /usr/local/bin:/usr/bin:/bin;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        }}
    }}
}}
""")

    def _launch(self) -> None:
        """Start fcgiwrap, then nginx; return once an authenticated info/refs answers 200."""
        self._write_nginx_conf()
        self.fcgi_socket.unlink(missing_ok=True)
        env = clean_env(drop_prefixes=("GIT_",))
        fcgi = self._spawn(
            GroupProcess(
                "fcgiwrap",
                [self._fcgiwrap, "-c", str(self.fcgi_workers), "-s", f"unix:{self.fcgi_socket}"],
                self.fcgi_log,
                env=env,
                cwd=self.base_dir,
                reaper=True,  # fcgiwrap's prefork workers and CGI children outlive it
            )
        )
        try:
            wait_for(
                self.fcgi_socket.exists,
                timeout=self.startup_timeout,
                what="fcgiwrap socket",
                alive=fcgi.death_note,
            )
            nginx = self._spawn(
                GroupProcess(
                    "nginx",
                    # -e: error log before the config is read (else /var/log/nginx/error.log)
                    [
                        self._nginx,
                        "-p",
                        f"{self.base_dir}/",
                        "-e",
                        str(self.nginx_log),
                        "-c",
                        str(self.nginx_conf),
                    ],
                    self.base_dir / "nginx-stdout.log",
                    env=env,
                    cwd=self.base_dir,
                )
            )
            probe = f"{self.url}/info/refs?service=git-upload-pack"

            def dead() -> str | None:
                return nginx.death_note() or fcgi.death_note()

            wait_for(
                lambda: http_status(probe, self.auth_headers) == 200,
                timeout=self.startup_timeout,
                what=f"git server on port {self.port}",
                alive=dead,
            )
        except ServiceError as err:
            tail = file_tail(self.nginx_log, 20)
            raise ServiceError(f"{err}\nnginx error log:\n{tail}") from err

    def stop(self) -> None:
        """Stop nginx, then fcgiwrap's whole process group (its CGI children outlive it ~1 s)."""
        super().stop()
        self.fcgi_socket.unlink(missing_ok=True)

    def close(self) -> None:
        super().close()
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
