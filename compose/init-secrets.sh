#!/usr/bin/env bash
# Prepare the docker-compose stack once: .env from .env.example with a random RabbitMQ password,
# and compose/secrets/* with random values plus the registry's htpasswd (bcrypt) for user relay.
# Existing files are kept, so running it again changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
secrets="$here/secrets"

random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

umask 077
mkdir -p "$secrets"
for name in deploy github_webhook registry_notify_token registry_password git_token; do
  if [ ! -s "$secrets/$name" ]; then
    random > "$secrets/$name"
    echo "init-secrets: wrote compose/secrets/$name"
  fi
done

# The registry accepts bcrypt only. htpasswd (apache2-utils), else Python's bcrypt, else the
# httpd image; the password goes through stdin, never on a command line.
if [ ! -s "$secrets/registry_htpasswd" ]; then
  if command -v htpasswd > /dev/null; then
    htpasswd -niB -C 10 relay < "$secrets/registry_password" > "$secrets/registry_htpasswd"
  elif python3 -c "import bcrypt" 2> /dev/null; then
    python3 -c 'import bcrypt, sys; pw = sys.stdin.read().strip().encode(); print("relay:" + bcrypt.hashpw(pw, bcrypt.gensalt()).decode())' \
      < "$secrets/registry_password" > "$secrets/registry_htpasswd"
  else
    docker run --rm -i --entrypoint htpasswd httpd:2.4-alpine -niB relay \
      < "$secrets/registry_password" > "$secrets/registry_htpasswd"
  fi
  echo "init-secrets: wrote compose/secrets/registry_htpasswd (user relay)"
fi
# The containers' non-root users read these through bind mounts; the directory stays private.
chmod 0700 "$secrets"
chmod 0644 "$secrets"/*

if [ ! -f "$root/.env" ]; then
  sed "s/^RABBITMQ_PASSWORD=.*/RABBITMQ_PASSWORD=$(random)/" "$root/.env.example" > "$root/.env"
  chmod 0600 "$root/.env"
  echo "init-secrets: wrote .env"
fi
