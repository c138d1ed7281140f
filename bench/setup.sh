#!/usr/bin/env bash
# Install what the benchmark harness needs, idempotently:
#   - wrk (the load generator), nginx-light (or nginx) and apache2 from the OS packages,
#   - bench/.venv with gunicorn, waitress, pyuwsgi and granian (pinned), for the Python peers,
#     and Flask (pinned) for the application benchmark's Flask JSON endpoint.
# Nothing else. Run as root (or with sudo available). Re-running is a no-op once installed.
# The services are NOT started: the harness runs each server itself, with its own config,
# on 127.0.0.1 only. Installing never starts nginx/apache2 (a policy-rc.d guard is used).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GUNICORN_VERSION="27.0.1"
WAITRESS_VERSION="3.0.2"
PYUWSGI_VERSION="2.0.30.post1"
GRANIAN_VERSION="2.8.9"
FLASK_VERSION="3.1.3"
PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_candidate() {  # have_candidate PKG -> 0 if apt knows an installable version of PKG
    local cand
    cand="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_packages() {
    local wanted=() pkg
    if ! have_candidate wrk; then
        echo "setup: refreshing apt lists (apt-get update)"
        $SUDO apt-get update -qq
    fi
    for pkg in wrk; do is_installed "$pkg" || wanted+=("$pkg"); done
    if ! is_installed nginx-light && ! is_installed nginx; then
        if have_candidate nginx-light; then wanted+=(nginx-light)
        elif have_candidate nginx; then wanted+=(nginx)
        else echo "setup: no nginx package available; the nginx peer will be skipped"; fi
    fi
    if ! is_installed apache2; then
        if have_candidate apache2; then wanted+=(apache2)
        else echo "setup: no apache2 package available; the apache peer will be skipped"; fi
    fi
    if [ "${#wanted[@]}" -eq 0 ]; then
        echo "setup: OS packages already installed"
        return
    fi
    # Keep the packages' maintainer scripts from starting system services on port 80.
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$guard" >/dev/null
        $SUDO chmod +x "$guard"
    fi
    echo "setup: apt-get install -y ${wanted[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${wanted[@]}" || { [ -n "$guard" ] && $SUDO rm -f "$guard"; exit 1; }
    if [ -n "$guard" ]; then $SUDO rm -f "$guard"; fi
}

python_venv() {
    local venv="$HERE/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "setup: creating $venv"
        "$PYTHON" -m venv "$venv"
    fi
    local pins=("gunicorn==$GUNICORN_VERSION" "waitress==$WAITRESS_VERSION"
                "pyuwsgi==$PYUWSGI_VERSION" "granian==$GRANIAN_VERSION" "flask==$FLASK_VERSION")
    if "$venv/bin/python" - "${pins[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    ok = all(version(name) == want for name, want in (p.split("==") for p in sys.argv[1:]))
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PY
    then
        echo "setup: ${pins[*]} already in $venv"
        return
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
}

apt_packages
python_venv
echo "setup: done. wrk: $(command -v wrk || echo missing);" \
     "nginx: $(command -v nginx || echo missing); apache2: $(command -v apache2 || echo missing)"
