"""A real Kubernetes API server for the test-suite: etcd 3.4 plus kube-apiserver 1.20.

The binaries come from `scripts/kube/build-apiserver.sh` (built from Debian's own `kubernetes`
source package into `$RELAY_KUBE_CACHE/bin`); etcd is Debian's `etcd-server`. Both run as
children of the test process on 127.0.0.1 with free ports, in a private directory, with their
logs beside them. The server is bootstrapped the way the relay meets a cluster: namespaces
`flux-system` and `dynamic-apps`, Flux's GitRepository and Kustomization CRDs, and a token user
`relay` bound by `tests/support/kube-rbac.yaml` to no more than CONTRACT.md section 7 grants.

Fault injection: `stop_apiserver()` / `start_apiserver()` / `restart_apiserver()` keep etcd and
its data; `compact_etcd()` makes any watch from an older resourceVersion end with 410 Gone.
The watch cache is off by default (`--watch-cache=false`) so that watches read etcd directly and
that 410 is deterministic; pass `watch_cache=True` to run with the cache as a cluster does.
"""

from __future__ import annotations

import atexit
import base64
import os
import secrets
import shutil
import time
import urllib.error
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from .kubeproc import HttpClient, Pki, Process, free_port, post_json, wait_until


def find_shared_dir() -> Path:
    """The project's shared/ directory: $RELAY_SHARED_DIR, else beside the repository (as in CI),
    else beside an ancestor of it (a git worktree under a folder of worktrees)."""
    if os.environ.get("RELAY_SHARED_DIR"):
        return Path(os.environ["RELAY_SHARED_DIR"])
    repo = Path(__file__).resolve().parents[2]
    for ancestor in repo.parents:
        if (ancestor / "shared" / "crds").is_dir():
            return ancestor / "shared"
    return repo.parent / "shared"


SHARED_DIR = find_shared_dir()
RBAC_FILE = Path(__file__).resolve().parent / "kube-rbac.yaml"
FLUX_CRD_FILES = (
    "source.toolkit.fluxcd.io_gitrepositories.yaml",
    "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
)
NAMESPACES = ("flux-system", "dynamic-apps")
DEFAULT_CONTROLLERS = (
    "deployment",
    "replicaset",
    "namespace",
    "garbagecollector",
    "serviceaccount",
    "serviceaccount-token",
)
_PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "CustomResourceDefinition": "customresourcedefinitions",
    "Deployment": "deployments",
    "Pod": "pods",
    "GitRepository": "gitrepositories",
    "Kustomization": "kustomizations",
}


def collection_path(obj: dict[str, Any]) -> str:
    """The REST collection an object is created in, e.g. /apis/apps/v1/namespaces/x/deployments."""
    api_version = obj["apiVersion"]
    prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    namespace = obj.get("metadata", {}).get("namespace")
    plural = _PLURALS[obj["kind"]]
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


class KubeAPIServer:
    """etcd + kube-apiserver (+ optionally kube-controller-manager) for one test session."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        work_dir: Path,
        shared_dir: Path = SHARED_DIR,
        crd_files: Sequence[str] = FLUX_CRD_FILES,
        watch_cache: bool = False,
        ready_timeout: float = 120.0,
        keep_etcd_data: bool = False,
    ) -> None:
        self.bin_dir = Path(cache_dir) / "bin"
        self.work_dir = Path(work_dir)
        self.crd_paths = [Path(shared_dir) / "crds" / name for name in crd_files]
        self.watch_cache = watch_cache
        self.ready_timeout = ready_timeout
        self.keep_etcd_data = keep_etcd_data
        self.admin_token = secrets.token_hex(16)
        self.relay_token = secrets.token_hex(16)
        self._manager_token = secrets.token_hex(16)
        self._etcd: Process | None = None
        self._apiserver: Process | None = None
        self._manager: Process | None = None
        self._http: HttpClient | None = None
        self._pki: Pki | None = None
        self._port = 0
        self._etcd_port = 0

    # --- public properties ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._etcd_port}"

    @property
    def ca_file(self) -> Path:
        return self.work_dir / "pki" / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    @property
    def relay_kubeconfig(self) -> Path:
        return self.work_dir / "relay.kubeconfig"

    @property
    def apiserver_running(self) -> bool:
        return self._apiserver is not None and self._apiserver.running

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start etcd and the API server, write kubeconfigs and bootstrap namespaces, CRDs, RBAC."""
        self._check_inputs()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._pki = Pki.create(self.work_dir / "pki")
        self._write_tokens()
        self._port = free_port()
        self._http = HttpClient(self.url, self.ca_file)
        atexit.register(self.stop)
        try:
            self._start_etcd()
            self.start_apiserver()
            self._write_kubeconfigs()
            self._bootstrap()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process this object started (controller manager, API server, etcd)."""
        for proc in (self._manager, self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        if not self.keep_etcd_data:  # 60 MB of preallocated WAL per run; the logs stay
            shutil.rmtree(self.work_dir / "etcd", ignore_errors=True)
        atexit.unregister(self.stop)

    def stop_apiserver(self, *, grace: float = 15.0) -> None:
        """SIGTERM, SIGKILL after ``grace`` s: it stops listening at once, but open watches
        (HTTP/1.1 streams) keep it draining until they end or it is killed."""
        if self._apiserver is not None:
            self._apiserver.stop(timeout=grace)

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on the same port with the same etcd; wait until ready."""
        if self._apiserver is None:
            self._apiserver = Process(
                "kube-apiserver",
                self._apiserver_argv(),
                log=self.work_dir / "kube-apiserver.log",
                cwd=self.work_dir,
            )
        self._apiserver.start()
        wait_until(
            "kube-apiserver /readyz",
            self._apiserver_ready,
            timeout=self.ready_timeout,
            interval=0.2,
        )
        if self._bootstrapped():
            self._wait_crds_served()

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    # --- etcd -------------------------------------------------------------------------------
    def _start_etcd(self) -> None:
        self._etcd_port, peer = free_port(), free_port()
        client, peer_url = self.etcd_url, f"http://127.0.0.1:{peer}"
        argv = [
            "etcd",
            "--name=relay-test",
            f"--data-dir={self.work_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=relay-test={peer_url}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        self._etcd = Process("etcd", argv, log=self.work_dir / "etcd.log", cwd=self.work_dir)
        self._etcd.start()
        wait_until("etcd /health", self._etcd_healthy, timeout=30.0)

    def _etcd_healthy(self) -> bool:
        assert self._etcd is not None
        self._etcd.ensure_alive()
        try:
            return bool(post_json(f"{self.etcd_url}/v3/kv/range", {"key": _b64("/")}, timeout=2.0))
        except (OSError, ValueError):
            return False

    def etcd_revision(self) -> int:
        """etcd's current revision (the API server's resourceVersions are these)."""
        reply = post_json(f"{self.etcd_url}/v3/kv/range", {"key": _b64("/"), "count_only": True})
        return int(reply["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd so that a watch from any resourceVersion older than now gets 410 Gone.

        A marker key outside the API server's /registry prefix is written first and etcd is
        compacted at that write's revision: compacting at the bare current revision would leave
        a watch from exactly one below it with an event whose previous value is gone, which
        kube-apiserver reports as a 500 ERROR event instead of 410. Returns the revision.
        """
        marker = {"key": _b64("/relay-test/compaction-marker"), "value": _b64(str(time.time()))}
        revision = int(post_json(f"{self.etcd_url}/v3/kv/put", marker)["header"]["revision"])
        try:
            post_json(
                f"{self.etcd_url}/v3/kv/compaction", {"revision": str(revision), "physical": True}
            )
        except (
            urllib.error.HTTPError
        ) as error:  # the API server's own compactor may have been first
            if b"compacted" not in error.read():
                raise
        return revision

    # --- kube-apiserver -------------------------------------------------------------------
    def _apiserver_argv(self) -> list[str]:
        pki = self._pki
        assert pki is not None
        return [
            str(self.bin_dir / "kube-apiserver"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._port}",
            "--insecure-port=0",
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={self.work_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={self.work_dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--profiling=false",
            "--v=1",
        ]

    def _apiserver_ready(self) -> bool:
        assert self._apiserver is not None
        self._apiserver.ensure_alive()
        try:
            status, _ = self.request("GET", "/readyz", timeout=2.0)
        except OSError:
            return False
        return status == 200

    def _write_tokens(self) -> None:
        # token,user,uid,"group1,group2" (the static token file of kube-apiserver)
        (self.work_dir / "tokens.csv").write_text(
            f'{self.admin_token},relay-test-admin,uid-admin,"system:masters"\n'
            f"{self.relay_token},relay,uid-relay\n"
            f'{self._manager_token},relay-test-controller-manager,uid-kcm,"system:masters"\n'
        )
        (self.work_dir / "tokens.csv").chmod(0o600)

    def _kubeconfig(self, user: str, token: str, namespace: str) -> str:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "relay-test",
                    "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": f"{user}@relay-test",
                    "context": {"cluster": "relay-test", "user": user, "namespace": namespace},
                }
            ],
            "current-context": f"{user}@relay-test",
        }
        return yaml.safe_dump(config, sort_keys=False)

    def _write_kubeconfigs(self) -> None:
        for path, user, token, namespace in (
            (self.admin_kubeconfig, "relay-test-admin", self.admin_token, "default"),
            (self.relay_kubeconfig, "relay", self.relay_token, "flux-system"),
            (
                self.work_dir / "controller-manager.kubeconfig",
                "relay-test-controller-manager",
                self._manager_token,
                "kube-system",
            ),
        ):
            path.write_text(self._kubeconfig(user, token, namespace))
            path.chmod(0o600)

    # --- bootstrap ------------------------------------------------------------------------
    def _bootstrap(self) -> None:
        wait_until(
            "namespace default",
            partial(self._answers_ok, "/api/v1/namespaces/default"),
            timeout=30.0,
            interval=0.2,
        )
        for name in NAMESPACES:
            self.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, exist_ok=True
            )
            # Pods can be created directly (no controller manager) despite ServiceAccount admission.
            self.create(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "automountServiceAccountToken": False,
                    "metadata": {"name": "default", "namespace": name},
                },
                exist_ok=True,
            )
        for path in self.crd_paths:
            self.create(yaml.safe_load(path.read_text()), exist_ok=True)
        self._wait_crds_served()
        for obj in yaml.safe_load_all(RBAC_FILE.read_text()):
            if obj:
                self.create(obj, exist_ok=True)

    def _crds(self) -> Iterable[dict[str, Any]]:
        for path in self.crd_paths:
            yield yaml.safe_load(path.read_text())

    def _bootstrapped(self) -> bool:
        return self.relay_kubeconfig.exists()

    def _wait_crds_served(self) -> None:
        for crd in self._crds():
            name, spec = crd["metadata"]["name"], crd["spec"]
            version = next(v["name"] for v in spec["versions"] if v.get("served"))
            path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
            wait_until(
                f"CRD {name} established",
                partial(self._crd_established, name),
                timeout=30.0,
                interval=0.2,
            )
            wait_until(
                f"{path} served", partial(self._answers_ok, path), timeout=30.0, interval=0.2
            )

    def _answers_ok(self, path: str) -> bool:
        return self.request("GET", path)[0] == 200

    def _crd_established(self, name: str) -> bool:
        status, crd = self.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        )
        conditions = (crd or {}).get("status", {}).get("conditions", []) if status == 200 else []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    # --- controller manager ---------------------------------------------------------------
    def start_controller_manager(self, controllers: Sequence[str] = DEFAULT_CONTROLLERS) -> None:
        """Run kube-controller-manager with only `controllers` (no scheduler, no kubelet exist)."""
        if self._manager is not None and self._manager.running:
            raise RuntimeError("kube-controller-manager already running")
        assert self._pki is not None
        argv = [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.work_dir / 'controller-manager.kubeconfig'}",
            f"--controllers={','.join(controllers)}",
            f"--service-account-private-key-file={self._pki.sa_key}",
            f"--root-ca-file={self._pki.ca_cert}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            "--v=1",
        ]
        self._manager = Process(
            "kube-controller-manager",
            argv,
            log=self.work_dir / "kube-controller-manager.log",
            cwd=self.work_dir,
        )
        self._manager.start()
        time.sleep(0.5)
        self._manager.ensure_alive()

    def stop_controller_manager(self) -> None:
        if self._manager is not None:
            self._manager.stop()
            self._manager = None

    # --- HTTP helpers for tests -------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """One API call (admin token unless `token` is given): (HTTP status, decoded body)."""
        assert self._http is not None, "start() first"
        return self._http.request(
            method,
            path,
            token=token or self.admin_token,
            body=body,
            content_type=content_type,
            timeout=timeout,
        )

    def open(
        self, method: str, path: str, *, token: str | None = None, timeout: float = 10.0
    ) -> Any:
        """A streaming response (for watches); the caller closes it."""
        assert self._http is not None, "start() first"
        return self._http.open(method, path, token=token or self.admin_token, timeout=timeout)

    def create(
        self, obj: dict[str, Any], *, exist_ok: bool = False, token: str | None = None
    ) -> dict[str, Any]:
        """Create `obj` as admin (or `token`); with `exist_ok`, a 409 returns the stored object."""
        status, reply = self.request("POST", collection_path(obj), body=obj, token=token)
        if status == 409 and exist_ok:
            status, reply = self.request(
                "GET", f"{collection_path(obj)}/{obj['metadata']['name']}", token=token
            )
        if status not in (200, 201):
            raise RuntimeError(
                f"creating {obj['kind']} {obj['metadata'].get('name')}: {status} {reply}"
            )
        return dict(reply)

    def _check_inputs(self) -> None:
        missing = [
            str(p) for p in (self.bin_dir / "kube-apiserver", *self.crd_paths) if not p.exists()
        ]
        if shutil.which("etcd") is None:
            missing.append("etcd (Debian etcd-server)")
        if shutil.which("openssl") is None:
            missing.append("openssl")
        if missing:
            raise FileNotFoundError(
                f"missing: {', '.join(missing)} (run scripts/kube/build-apiserver.sh)"
            )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
