# Shared by scripts/test, scripts/lint, scripts/example and scripts/lock: sourced, not run.
#
# Environments (each a virtualenv in the checkout):
#   .venv            the default: Python 3 from PATH, every package at the version in
#                    requirements/lock.txt (hash-checked), the package itself editable.
#   .venv-3.12 ...   the same on another Python (`scripts/test --python 3.12`).
# Variables read: STREAMHUB_PYTHON (interpreter), STREAMHUB_VENV (venv folder).

LOCK=requirements/lock.txt
# Extras the lock covers: everything the tests, the examples and the linters import.
LOCK_EXTRAS="dev,hiredis,client,cluster,postgres"

# Run a command as root: directly if we are root, else through sudo if present.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "scripts: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# apt-get install, running `apt-get update` only if the first attempt fails
# (a fresh machine or container often has empty package lists).
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y "$@"; then
        as_root apt-get update
        as_root apt-get install -y "$@"
    fi
}

ensure_redis_server() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis-server not found on PATH, installing it" >&2
        apt_install redis-server
    fi
}

# PostgreSQL's server binaries (initdb, pg_ctl): the tests start private servers from them on
# random loopback ports; the machine's own service, if any, is never used.
ensure_postgres() {
    if ! command -v pg_config >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        echo "PostgreSQL (initdb) not found, installing it" >&2
        apt_install postgresql
    fi
}

# Print the path of an interpreter for Python X.Y: `pythonX.Y` on PATH if it runs (a pyenv
# shim of a version that is not selected does not), else pyenv's own copy.
find_python() {
    local version=$1 candidate
    if command -v "python$version" >/dev/null 2>&1 && "python$version" -c '' 2>/dev/null; then
        command -v "python$version"
        return 0
    fi
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "scripts: Python $version not found (neither python$version on PATH nor under pyenv)" >&2
    return 1
}

# pip in venv $1 with the arguments that follow. This machine's pip configuration may name
# package folders that do not exist; their warnings, one per package, are left out of the log.
pip_in() {
    local venv=$1
    shift
    "$venv/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

# Create the virtualenv $1 with the interpreter $2 (default python3).
make_venv() {
    local venv=$1 python=${2:-python3}
    if ! "$python" -m venv "$venv"; then
        # Debian ships `venv` separately from python3.
        rm -rf "$venv"
        apt_install python3-venv
        "$python" -m venv "$venv"
    fi
}

# Install the locked environment into venv $1: every package from the lock, hash-checked,
# then the package itself (editable unless $2 is a wheel file) without resolving anything more.
install_locked() {
    local venv=$1 target=${2:-}
    pip_in "$venv" install -q --require-hashes -r "$LOCK"
    if [ -z "$target" ]; then
        pip_in "$venv" install -q --no-deps --no-build-isolation -e .
    else
        pip_in "$venv" install -q --no-deps "$target"
    fi
}

# The default environment: create it if missing, and reinstall when the lock or pyproject.toml
# changed since the last successful install.
ensure_venv() {
    local venv=${STREAMHUB_VENV:-.venv}
    if [ ! -x "$venv/bin/python" ]; then
        make_venv "$venv" "${STREAMHUB_PYTHON:-python3}"
    fi
    local stamp=$venv/.installed-stamp
    if [ ! -e "$stamp" ] || [ "$LOCK" -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        install_locked "$venv"
        touch "$stamp"
    fi
}
