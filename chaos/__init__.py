"""Fault runs that show nothing accepted is lost (issue 9, ``make chaos``).

Each scenario is a module runnable alone (``python -m chaos.<name>``) and returns a
:class:`chaos.report.Result`: its invariants, counts and timings. ``python -m chaos`` runs them all,
prints one summary, writes the "Chaos" section of RELIABILITY.md and exits non-zero when any
invariant failed.

- ``chaos.kill_workers``: the gateway and every worker as separate processes on a private vhost
  of the shared RabbitMQ, a real registry and Git server; each process SIGKILLed in turn during a
  run of signed deploys.
- ``chaos.broker_restart``: a private, throw-away RabbitMQ node restarted under a gateway load.
- ``chaos.service_outage``: the Git server, the registry and the Kubernetes API server (real
  etcd + kube-apiserver, a stand-in Flux, the reconcile and watch workers following every deploy
  to ``deploy.ready``) stopped and started mid-run; dead letters replayed with ``relay dlq``
  once they are back.
- ``chaos.secret_scan``: every log line of a run searched for every secret.

Everything runs on loopback, bounded in count and time, and stops what it started.
"""
