# Sourced by scripts that need a Python virtualenv (the SDK's tests, the
# test tools). Defines `ensure_venv PYTHON VENV`: creates VENV with PYTHON
# unless a working one is there, installing python3-venv from Debian's
# packages when the interpreter cannot make one (Debian's python3 has no
# ensurepip without it).

_venv_log() { printf '\n==> %s\n' "$*"; }

_install_venv_support() {
    local python=$1 version
    _venv_log "installing python3-venv (Debian packages)"
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt-get update -qq
    apt-get install -y -qq "python${version}-venv" || apt-get install -y -qq python3-venv
}

ensure_venv() {
    local python=$1 venv=$2
    if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        _install_venv_support "$python"
    fi
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        _venv_log "creating the virtualenv $venv"
        rm -rf "$venv"
        if ! "$python" -m venv "$venv"; then
            rm -rf "$venv"
            _install_venv_support "$python"
            "$python" -m venv "$venv"
        fi
    fi
}
