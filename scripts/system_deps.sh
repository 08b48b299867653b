#!/bin/sh
# What `make test` needs from the system besides Python packages (`make system-deps`, also run by .ci/run):
#   espeak-ng       the cascade backend's offline TTS (it runs the binary; no PyPI package ships one)
#   chromium        the HTML report test renders the page headless
#   fonts-noto-cjk  so that page shows its Chinese text
#   python3-venv    only where the Python given cannot make a venv (Debian's python3 without it)
# Installed with apt-get where we are root; otherwise the one command to run is printed and this stops (exit 1).
set -eu
PYTHON="${1:-python3}"

missing=""
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$missing chromium"
if ! command -v fc-list >/dev/null 2>&1 || [ -z "$(fc-list :lang=zh family 2>/dev/null)" ]; then
  missing="$missing fonts-noto-cjk"
fi
"$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1 || missing="$missing python3-venv"

if [ -z "$missing" ]; then
  exit 0
fi
install="apt-get update && apt-get install -y --no-install-recommends$missing"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "make system-deps: installing$missing (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  echo "make system-deps: the tests need$missing; install them with:" >&2
  echo "  sudo sh -c '$install'" >&2
else
  echo "make system-deps: the tests need$missing (Debian names); install them with your system's package manager" >&2
fi
echo "then run the make command again" >&2
exit 1
