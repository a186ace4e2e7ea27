"""``relay check-config``: validate settings and say what would run where."""

from __future__ import annotations

import argparse

from relay.settings import Settings, load_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "check-config",
        help="validate the settings; print each receiver's URL",
        description="Validate the YAML settings and the environment. Exits 2 naming the bad key "
        "and file (bad YAML, unknown key, missing or empty secret file), 0 with a summary.",
    )
    parser.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(summary(settings))
    return 0


def summary(settings: Settings) -> str:
    base = settings.public_base_url()
    lines = [
        "configuration OK",
        f"broker:     {_safe_url(settings.broker.url)}",
        f"gateway:    {settings.http.host}:{settings.http.port} (public {base})",
        "receivers:",
    ]
    for receiver in settings.receivers:
        count = len(receiver.secrets)
        plural = "s" if count != 1 else ""
        lines.append(f"  {receiver.name:<12} {receiver.type:<17} {base}/hook/{receiver.name}")
        lines.append(
            f"  {'':<12} {count} secret{plural}, reconciles {len(receiver.reconcile)} object(s)"
        )
    if not settings.receivers:
        lines.append("  (none)")
    deploy = settings.deploy
    signed = (
        f"{len(deploy.secrets)} secret(s)" if deploy.secrets else "disabled: no deploy.secret_file"
    )
    lines += [
        f"deploy:     {base}/deploy ({signed})",
        f"registry:   {deploy.registry.url} (insecure={deploy.registry.insecure})",
        f"gitops:     {_safe_url(deploy.gitops.url) or '(not set)'} "
        f"{deploy.gitops.branch}:{deploy.gitops.path}",
        f"builder:    {deploy.builder.backend}",
        "kubernetes: "
        + (
            f"kubeconfig {settings.kubernetes.kubeconfig}"
            if settings.kubernetes and settings.kubernetes.kubeconfig
            else ("in-cluster" if settings.kubernetes else "not configured (stages are skipped)")
        ),
    ]
    return "\n".join(lines)


def _safe_url(url: str) -> str:
    from relay.logging import redactor

    return redactor().scrub(url)
