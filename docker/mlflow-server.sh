#!/bin/sh
# The tracking server's start: MLflow with basic auth on PostgreSQL, every secret from a file.
#
#   In the image (docker/mlflow.Dockerfile) this is the entrypoint; compose.yaml mounts the
#   secrets under /run/secrets. Without a container (what tests/deploy runs), the same script:
#     SSVAE_SECRETS_DIR=~/.ssvae/secrets POSTGRES_HOST=127.0.0.1 \
#       MLFLOW_ARTIFACTS_DESTINATION=/srv/mlflow/artifacts docker/mlflow-server.sh
#
# Secrets (files in $SSVAE_SECRETS_DIR, one value each; none has a default, and a missing or
# empty one stops the start with exit status 78):
#   postgres_password        the PostgreSQL password of $POSTGRES_USER
#   mlflow_admin_password    the MLflow admin's password (user $MLFLOW_ADMIN_USERNAME)
#   mlflow_flask_secret_key  MLFLOW_FLASK_SERVER_SECRET_KEY (signs the auth app's CSRF tokens)
# The admin password only takes effect the first time the server starts on an empty database;
# after that, change it through MLflow's update-password API (docs/deploy.md).
#
# Settings (environment; defaults in brackets):
#   MLFLOW_HOST [127.0.0.1]   address the server listens on; compose.yaml sets 0.0.0.0 inside
#                             the container and publishes the port on the host's 127.0.0.1
#   MLFLOW_PORT [5000], MLFLOW_WORKERS [2], MLFLOW_ADMIN_USERNAME [admin]
#   MLFLOW_DEFAULT_PERMISSION [READ]  what a logged-in user may do with others' experiments
#   POSTGRES_HOST [postgres], POSTGRES_PORT [5432], POSTGRES_USER [mlflow], POSTGRES_DB [mlflow]
#   MLFLOW_ARTIFACTS_DESTINATION [/mlflow/artifacts]  served through the server (--serve-artifacts)
set -eu

secrets_dir="${SSVAE_SECRETS_DIR:-/run/secrets}"

secret() {  # secret NAME -> the file's content; exits 78 (EX_CONFIG) when missing or empty
    if [ ! -s "$secrets_dir/$1" ]; then
        echo "mlflow-server: secret '$1' is missing or empty (or $secrets_dir is not open to" \
            "uid $(id -u)): put it in $secrets_dir/$1 (see docker/compose.yaml's header);" \
            "refusing to start" >&2
        exit 78
    fi
    if [ ! -r "$secrets_dir/$1" ]; then
        echo "mlflow-server: secret '$1' is not readable by uid $(id -u): make" \
            "$secrets_dir/$1 readable (mode 644 in a 700 directory); refusing to start" >&2
        exit 78
    fi
    tr -d '\r\n' < "$secrets_dir/$1"
}

postgres_password="$(secret postgres_password)"
admin_password="$(secret mlflow_admin_password)"
MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret mlflow_flask_secret_key)"
export MLFLOW_FLASK_SERVER_SECRET_KEY

# The password goes into a URI: percent-encode it (python is the server's own interpreter),
# handed over on stdin, not as an argument (which every user of the machine can read with ps).
encoded_password="$(printf '%s' "$postgres_password" | python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""))')"
database_uri="postgresql+psycopg://${POSTGRES_USER:-mlflow}:${encoded_password}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-mlflow}"

# The auth app reads its settings, admin credentials included, from this ini file. It holds
# secrets, so it is private to the server's user and lives only as long as the server. Python's
# configparser reads it, where `%` starts an interpolation: each one in a value is doubled (the
# percent-encoded URI has some, a password may).
ini() { printf '%s' "$1" | sed 's/%/%%/g'; }
umask 077
auth_dir="$(mktemp -d)"
MLFLOW_AUTH_CONFIG_PATH="$auth_dir/basic_auth.ini"
export MLFLOW_AUTH_CONFIG_PATH
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = $(ini "${MLFLOW_DEFAULT_PERMISSION:-READ}")
database_uri = $(ini "$database_uri")
admin_username = $(ini "${MLFLOW_ADMIN_USERNAME:-admin}")
admin_password = $(ini "$admin_password")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
# The backend URI holds the password too: passed in the environment, not on the command line
# (which every user of the machine can read with ps).
MLFLOW_BACKEND_STORE_URI="$database_uri"
export MLFLOW_BACKEND_STORE_URI
unset postgres_password admin_password encoded_password database_uri

exec mlflow server \
    --app-name basic-auth \
    --host "${MLFLOW_HOST:-127.0.0.1}" \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --serve-artifacts \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlflow/artifacts}"
