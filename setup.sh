#!/usr/bin/env bash
# Set-up from nothing: Debian's chromium (the browser test drives the demo with it), then .venv with every
# Python package and this repository's helpers package. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null; then
    if command -v apt-get >/dev/null; then
        sudo=$([ "$(id -u)" = 0 ] || echo sudo)
        echo "Installing Debian's chromium for the browser test (apt-get)..."
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    else
        echo "No apt-get here: install chromium yourself (at /usr/bin/chromium) for tests/test_demo.py's browser test." >&2
    fi
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# one pip command: torch is pinned in requirements.txt to the CPU build (an unpinned torch pulls the CUDA wheels)
.venv/bin/pip install --quiet -r requirements.txt
echo "Set up: .venv is ready (.venv/bin/jupyter lab notebooks/, .venv/bin/python -m helpers --help)."
