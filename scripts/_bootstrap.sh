# Shared by scripts/test and scripts/example: sourced, not run.
# Creates .venv and installs the package (editable, with the dev and hiredis
# extras) when pyproject.toml changed since the last install.
# Run a command as root: directly if we are root, else through sudo if present.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "scripts/test: need root (or sudo) to run: $*" >&2
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

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv; then
            # Debian ships `venv` separately from python3.
            rm -rf .venv
            apt_install python3-venv
            python3 -m venv .venv
        fi
    fi

    # Reinstall only when pyproject.toml changed since the last successful install.
    stamp=.venv/.installed-stamp
    if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q -e '.[dev,hiredis]'
        touch "$stamp"
    fi
}
