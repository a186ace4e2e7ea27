#!/usr/bin/env bash
# Prepare a Debian 12 machine (as root) for the relay's real-service tests. Idempotent.
#   1. install the Debian packages whose commands are missing (apt-get update once, only then)
#   2. make sure RabbitMQ answers at RELAY_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/)
# Prints one line per step; exits non-zero with a message on the first failure.
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export DEBIAN_FRONTEND=noninteractive
AMQP_URL="${RELAY_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
RABBIT_START_TIMEOUT="${RELAY_RABBIT_START_TIMEOUT:-90}"

say() { printf 'setup-system: %s\n' "$*"; }
die() { printf 'setup-system: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (installs Debian packages, starts RabbitMQ)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian 12"

# --- 1. packages -----------------------------------------------------------------------------
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
  say "note: kubectl not found (not installed here: it is not part of these services)"
fi

# --- 2. RabbitMQ -----------------------------------------------------------------------------
# host and port of the AMQP URL (amqp://user:pass@host:port/vhost), in plain bash
hostport="${AMQP_URL#*://}"; hostport="${hostport%%/*}"; hostport="${hostport##*@}"
AMQP_HOST="${hostport%%:*}"
if [ "$hostport" != "$AMQP_HOST" ]; then AMQP_PORT="${hostport##*:}"; else AMQP_PORT=5672; fi
[ -n "$AMQP_HOST" ] && [[ "$AMQP_PORT" =~ ^[0-9]+$ ]] \
  || die "cannot parse host:port from RELAY_TEST_AMQP_URL=$AMQP_URL"

# True when something at host:port speaks AMQP 0-9-1: it answers our protocol header with a
# Connection.Start method frame (frame type 1). A merely open port is not enough.
amqp_answers() {
  local first
  first=$(timeout 5 bash -c '
      exec 3<>"/dev/tcp/$1/$2" || exit 1
      printf "AMQP\x00\x00\x09\x01" >&3
      head -c 1 <&3 | od -An -tx1' _ "$AMQP_HOST" "$AMQP_PORT" 2>/dev/null) || return 1
  [ "${first// /}" = "01" ]
}

if amqp_answers; then
  say "rabbitmq: answers at $AMQP_HOST:$AMQP_PORT"
  exit 0
fi
case "$AMQP_HOST" in
  127.0.0.1|localhost|::1) ;;
  *) die "RabbitMQ does not answer at $AMQP_HOST:$AMQP_PORT and that is not this machine" ;;
esac

rabbit_pinged() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
if rabbit_pinged; then
  say "rabbitmq: node is up but AMQP does not answer at $AMQP_HOST:$AMQP_PORT yet; waiting"
else
  say "rabbitmq: starting (rabbitmq-server -detached, listener 127.0.0.1:$AMQP_PORT)"
  # Loopback only, on the URL's port, unless /etc/rabbitmq/rabbitmq.conf already says where.
  if ! grep -qs '^[[:space:]]*listeners\.tcp' "${RABBITMQ_CONFIG_FILE:-/etc/rabbitmq/rabbitmq.conf}"; then
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT"
  fi
  rabbitmq-server -detached || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
  deadline=$(( SECONDS + RABBIT_START_TIMEOUT ))
  until rabbit_pinged; do
    [ "$SECONDS" -lt "$deadline" ] || die "rabbitmq did not answer ping within ${RABBIT_START_TIMEOUT}s (see /var/log/rabbitmq/)"
    sleep 0.5
  done
  say "rabbitmq: node answers ping"
fi
timeout "$RABBIT_START_TIMEOUT" rabbitmqctl await_startup >/dev/null \
  || die "rabbitmqctl await_startup failed"
say "rabbitmq: startup complete"
deadline=$(( SECONDS + 30 ))
until amqp_answers; do
  [ "$SECONDS" -lt "$deadline" ] || die "RabbitMQ runs but AMQP does not answer at $AMQP_HOST:$AMQP_PORT (check listeners in /etc/rabbitmq/rabbitmq.conf)"
  sleep 0.5
done
say "rabbitmq: answers at $AMQP_HOST:$AMQP_PORT"
