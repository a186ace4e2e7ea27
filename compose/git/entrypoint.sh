#!/bin/sh
# The compose Git server: make the GitOps repository on first start (with the parent
# kustomization.yaml the commit worker maintains, empty), then serve every repository under
# GIT_ROOT over smart HTTP with Basic auth (user GIT_USER, password from GIT_PASSWORD_FILE).
# Every path is an environment variable so the same script runs in the tests outside a container.
set -eu
GIT_ROOT=${GIT_ROOT:-/srv/git}
GIT_REPO=${GIT_REPO:-homelab}
GIT_USER=${GIT_USER:-relay}
GIT_PASSWORD_FILE=${GIT_PASSWORD_FILE:-/run/secrets/git_token}
GIT_PORT=${GIT_PORT:-8080}
GITOPS_PATH=${GITOPS_PATH:-kubernetes/rpi-cluster/apps/dynamic}
GIT_BRANCH=${GIT_BRANCH:-main}
RUN_DIR=${RUN_DIR:-/tmp/git-server}
TEMPLATE=${NGINX_TEMPLATE:-/etc/relay-git/nginx.conf.template}
GIT_HTTP_BACKEND=${GIT_HTTP_BACKEND:-/usr/lib/git-core/git-http-backend}
FASTCGI_PARAMS=${FASTCGI_PARAMS:-/etc/nginx/fastcgi_params}

log() { echo "git-server: $*" >&2; }

make_repository() {
  repo="$GIT_ROOT/$GIT_REPO.git"
  [ -d "$repo" ] && return 0
  log "creating $repo with $GITOPS_PATH/kustomization.yaml"
  git init --quiet --bare --initial-branch="$GIT_BRANCH" "$repo"
  git -C "$repo" config http.receivepack true
  seed=$(mktemp -d)
  mkdir -p "$seed/$GITOPS_PATH"
  cat > "$seed/$GITOPS_PATH/kustomization.yaml" <<'YAML'
# Maintained by the relay's commit worker: one ./<app>/ks.yaml per deployed app.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: []
YAML
  git -C "$seed" init --quiet --initial-branch="$GIT_BRANCH"
  git -C "$seed" add .
  git -C "$seed" -c user.name=relay -c user.email=relay@localhost \
    commit --quiet -m "Start the GitOps repository"
  git -C "$seed" push --quiet "$repo" "$GIT_BRANCH"
  rm -rf "$seed"
}

write_config() {
  mkdir -p "$RUN_DIR"
  umask 077
  htpasswd -ciB "$RUN_DIR/htpasswd" "$GIT_USER" < "$GIT_PASSWORD_FILE" 2>/dev/null
  sed -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@PORT@|$GIT_PORT|g" -e "s|@GIT_ROOT@|$GIT_ROOT|g" \
      -e "s|@GIT_HTTP_BACKEND@|$GIT_HTTP_BACKEND|g" -e "s|@FASTCGI_PARAMS@|$FASTCGI_PARAMS|g" \
      "$TEMPLATE" > "$RUN_DIR/nginx.conf"
}

[ -s "$GIT_PASSWORD_FILE" ] || { log "$GIT_PASSWORD_FILE is missing or empty"; exit 1; }
mkdir -p "$GIT_ROOT"
make_repository
write_config
fcgiwrap -c 4 -s "unix:$RUN_DIR/fcgiwrap.sock" &
log "serving $GIT_ROOT on :$GIT_PORT"
exec nginx -e stderr -c "$RUN_DIR/nginx.conf" -g "daemon off;"
