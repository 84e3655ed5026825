#!/usr/bin/env sh
# Installs a headless-capable Chromium for the report rendering test when it is missing.
# Idempotent and quiet; always exits 0: without root or network the test skips and says why.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: chromium missing and not root; the report rendering test will skip" >&2
        exit 0
    fi
else
    SUDO=""
fi
( $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium ) \
    >/dev/null 2>&1 || echo "ensure_chromium: could not install chromium; the report rendering test will skip" >&2
exit 0
