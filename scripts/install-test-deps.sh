#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond npm: nginx from Debian's packages, for the
# front-proxy tests (test/fixtures/nginx.ts). Idempotent and quiet. It never fails the build: when
# nginx cannot be installed it prints a one-line notice and those tests skip with a visible message.
set -u

notice() { printf 'install-test-deps: %s\n' "$*" >&2; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

have_nginx && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  notice "nginx missing and apt-get unavailable; the nginx end-to-end tests will be skipped"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  notice "nginx missing and not root; the nginx end-to-end tests will be skipped (install nginx to run them)"
  exit 0
fi

# The tests start their own nginx; keep the package's service from starting on port 80. Only when
# no policy is in place already (container images usually ship one), and removed again afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
if ! { apt-get install -y -qq --no-install-recommends nginx >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends nginx >/dev/null 2>&1; }; }; then
  notice "apt-get could not install nginx; the nginx end-to-end tests will be skipped"
  exit 0
fi
have_nginx || notice "nginx installed but not found on PATH or at /usr/sbin/nginx; the nginx end-to-end tests will be skipped"
exit 0
