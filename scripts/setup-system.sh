#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) for the relay's real-service tests. Idempotent.
#   1. install the Debian packages whose commands are missing (apt-get update once, only then)
#   2. make sure RabbitMQ answers at RELAY_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/)
#      and that its local node does real work: rabbitmqctl adds and deletes a vhost, each within
#      RELAY_RABBIT_CTL_TIMEOUT (default 20 s). A node that answers but fails that is restarted
#      once (rabbitmqctl stop, then only the rabbitmq user's beam.smp/epmd processes signalled).
# Prints one line per step; exits non-zero with a message on the first failure.
# Sourced (bash), it only defines its settings and functions: tests call them one by one.
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export DEBIAN_FRONTEND=noninteractive
AMQP_URL="${RELAY_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
RABBIT_START_TIMEOUT="${RELAY_RABBIT_START_TIMEOUT:-90}"
RABBIT_CTL_TIMEOUT="${RELAY_RABBIT_CTL_TIMEOUT:-20}"
RABBIT_STOP_WAIT="${RELAY_RABBIT_STOP_WAIT:-10}"   # seconds for the processes to go after a signal
RABBIT_USER=rabbitmq                          # the Debian package runs the node as this user
RABBIT_PROBE_VHOST="relay-healthcheck-$$"     # add_vhost of an existing vhost is a no-op

say() { printf 'setup-system: %s\n' "$*"; }
die() { printf 'setup-system: FAILED: %s\n' "$*" >&2; exit 1; }

# --- 1. packages -----------------------------------------------------------------------------
install_packages() {
  # "command:package" pairs; a package is installed only if its command is missing.
  REQUIRED=(
    "rabbitmq-server:rabbitmq-server"
    "docker-registry:docker-registry"
    "buildah:buildah"
    "skopeo:skopeo"
    "nginx:nginx-light"
    "fcgiwrap:fcgiwrap"
    "htpasswd:apache2-utils"
    "git:git"
  )
  missing=()
  for pair in "${REQUIRED[@]}"; do
    cmd="${pair%%:*}" pkg="${pair#*:}"
    if command -v "$cmd" >/dev/null 2>&1; then
      say "ok: $cmd ($(command -v "$cmd"))"
    else
      say "missing: $cmd -> will install $pkg"
      missing+=("$pkg")
    fi
  done
  # The base image needs a *static* busybox: Debian's plain `busybox` is dynamically linked, so
  # `command -v busybox` is not enough; busybox-static replaces it if present.
  if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    say "ok: busybox-static (/bin/busybox)"
  else
    say "missing: static /bin/busybox -> will install busybox-static"
    missing+=("busybox-static")
  fi

  if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get update"
    apt-get update -qq || die "apt-get update failed"
    say "apt-get install ${missing[*]}"
    # Services are not started by apt here (no init system); RabbitMQ is started below.
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    for pair in "${REQUIRED[@]}"; do
      cmd="${pair%%:*}"
      command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing its package"
    done
    [ -x /bin/busybox ] || die "/bin/busybox still missing after installing busybox-static"
    say "installed: ${missing[*]}"
  else
    say "packages: nothing to install"
  fi
  [ -x "$(git --exec-path)/git-http-backend" ] || die "git-http-backend missing from $(git --exec-path)"
  say "ok: git-http-backend ($(git --exec-path)/git-http-backend)"
  if command -v kubectl >/dev/null 2>&1; then
    say "ok: kubectl ($(command -v kubectl))"
  else
    # The manifests' tests build them with `kubectl kustomize`: Debian's kubectl package where the
    # machine's sources have it, else Debian's own kubernetes-client.
    say "missing: kubectl -> will install kubectl (or kubernetes-client)"
    apt-get install -y -qq kubectl >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq kubectl >/dev/null 2>&1; } \
      || apt-get install -y -qq kubernetes-client >/dev/null \
      || die "could not install kubectl"
    say "installed: kubectl ($(command -v kubectl))"
  fi
}

# --- 2. RabbitMQ -----------------------------------------------------------------------------
# AMQP_HOST and AMQP_PORT of the AMQP URL (amqp://user:pass@host:port/vhost), in plain bash
parse_amqp_url() {
  local hostport="${AMQP_URL#*://}"
  hostport="${hostport%%/*}"; hostport="${hostport##*@}"
  AMQP_HOST="${hostport%%:*}"
  if [ "$hostport" != "$AMQP_HOST" ]; then AMQP_PORT="${hostport##*:}"; else AMQP_PORT=5672; fi
  if [ -z "$AMQP_HOST" ] || ! [[ "$AMQP_PORT" =~ ^[0-9]+$ ]]; then
    die "cannot parse host:port from RELAY_TEST_AMQP_URL=$AMQP_URL"
  fi
}

rabbit_is_local() {
  case "$AMQP_HOST" in 127.0.0.1|localhost|::1) return 0 ;; *) return 1 ;; esac
}

# True when something at host:port speaks AMQP 0-9-1: it answers our protocol header with a
# Connection.Start method frame (frame type 1). A merely open port is not enough.
amqp_answers() {
  local first
  # shellcheck disable=SC2016  # $1 and $2 are the inner shell's arguments
  first=$(timeout 5 bash -c '
      exec 3<>"/dev/tcp/$1/$2" || exit 1
      printf "AMQP\x00\x00\x09\x01" >&3
      head -c 1 <&3 | od -An -tx1' _ "$AMQP_HOST" "$AMQP_PORT" 2>/dev/null) || return 1
  [ "${first// /}" = "01" ]
}

rabbit_pinged() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

# rabbitmqctl within RABBIT_CTL_TIMEOUT. Debian's wrapper runs it through sh and su: timeout
# signals its whole process group (it makes its own), and SIGKILLs it 5 s later if need be.
rabbitctl_bounded() { timeout -k 5 "$RABBIT_CTL_TIMEOUT" rabbitmqctl -q "$@" >/dev/null 2>&1; }

# True when the node does real work, not just answer pings: once, after a killed test run,
# the node answered pings but `rabbitmqctl add_vhost` hung forever and every fixture timed out.
rabbit_healthy() {
  rabbitctl_bounded add_vhost "$RABBIT_PROBE_VHOST" \
    && rabbitctl_bounded delete_vhost "$RABBIT_PROBE_VHOST"
}

start_rabbit() {
  say "rabbitmq: starting (rabbitmq-server -detached, listener 127.0.0.1:$AMQP_PORT)"
  # Loopback only, on the URL's port, unless /etc/rabbitmq/rabbitmq.conf already says where.
  if ! grep -qs '^[[:space:]]*listeners\.tcp' "${RABBITMQ_CONFIG_FILE:-/etc/rabbitmq/rabbitmq.conf}"; then
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT"
  fi
  rabbitmq-server -detached || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
  local deadline=$(( SECONDS + RABBIT_START_TIMEOUT ))
  until rabbit_pinged; do
    [ "$SECONDS" -lt "$deadline" ] || die "rabbitmq did not answer ping within ${RABBIT_START_TIMEOUT}s (see /var/log/rabbitmq/)"
    sleep 0.5
  done
  say "rabbitmq: node answers ping"
}

# After a start: the node has booted and AMQP answers at AMQP_HOST:AMQP_PORT.
await_rabbit() {
  timeout -k 5 "$RABBIT_START_TIMEOUT" rabbitmqctl await_startup >/dev/null \
    || die "rabbitmqctl await_startup failed or took over ${RABBIT_START_TIMEOUT}s"
  say "rabbitmq: startup complete"
  local deadline=$(( SECONDS + 30 ))
  until amqp_answers; do
    [ "$SECONDS" -lt "$deadline" ] || die "RabbitMQ runs but AMQP does not answer at $AMQP_HOST:$AMQP_PORT (check listeners in /etc/rabbitmq/rabbitmq.conf)"
    sleep 0.5
  done
  say "rabbitmq: answers at $AMQP_HOST:$AMQP_PORT"
}

# Process ids of the RabbitMQ user's Erlang VMs (the node, stuck rabbitmqctl calls) and epmd.
rabbit_pids() { pgrep -u "$RABBIT_USER" -x 'beam\.smp|epmd' || true; }

# Stop the node however stuck it is: rabbitmqctl stop first; then SIGTERM, then SIGKILL, to the
# rabbitmq user's beam.smp and epmd processes only, waiting up to RABBIT_STOP_WAIT after each.
stop_rabbit() {
  id -u "$RABBIT_USER" >/dev/null 2>&1 || die "no user $RABBIT_USER: is this Debian's rabbitmq-server?"
  rabbitctl_bounded stop || say "rabbitmq: rabbitmqctl stop failed or hung over ${RABBIT_CTL_TIMEOUT}s"
  local sig deadline pids=()
  for sig in TERM KILL; do
    mapfile -t pids < <(rabbit_pids)
    [ "${#pids[@]}" -gt 0 ] || return 0
    say "rabbitmq: SIG$sig to $RABBIT_USER's beam.smp/epmd: ${pids[*]}"
    kill -s "$sig" "${pids[@]}" 2>/dev/null || true
    deadline=$(( SECONDS + RABBIT_STOP_WAIT ))
    while [ -n "$(rabbit_pids)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
  done
  [ -z "$(rabbit_pids)" ] || die "rabbitmq processes outlived SIGKILL: $(rabbit_pids | tr '\n' ' ')"
}

restart_rabbit() {
  [ "$(id -u)" -eq 0 ] || die "rabbitmq needs a restart, and that needs root"
  stop_rabbit
  start_rabbit
  await_rabbit
}

ensure_rabbit() {
  parse_amqp_url
  if amqp_answers; then
    say "rabbitmq: answers at $AMQP_HOST:$AMQP_PORT"
  else
    rabbit_is_local || die "RabbitMQ does not answer at $AMQP_HOST:$AMQP_PORT and that is not this machine"
    if rabbit_pinged; then
      say "rabbitmq: node is up but AMQP does not answer at $AMQP_HOST:$AMQP_PORT yet; waiting"
    else
      start_rabbit
    fi
    await_rabbit
  fi
  if ! rabbit_is_local; then
    say "rabbitmq: $AMQP_HOST is not this machine; rabbitmqctl health check skipped"
    return 0
  fi
  if rabbit_healthy; then
    say "rabbitmq: rabbitmqctl adds and deletes a vhost"
    return 0
  fi
  say "rabbitmq: answers, but rabbitmqctl add_vhost/delete_vhost failed or hung over ${RABBIT_CTL_TIMEOUT}s; restarting the node"
  restart_rabbit
  rabbit_healthy \
    || die "RabbitMQ was restarted, but rabbitmqctl add_vhost/delete_vhost still fails or hangs over ${RABBIT_CTL_TIMEOUT}s (see /var/log/rabbitmq/)"
  say "rabbitmq: rabbitmqctl adds and deletes a vhost after the restart"
}

main() {
  [ "$(id -u)" -eq 0 ] || die "run as root (installs Debian packages, starts RabbitMQ)"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian 12"
  install_packages
  ensure_rabbit
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
