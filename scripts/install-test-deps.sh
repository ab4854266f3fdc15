#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond npm, from Debian's packages: nginx for the
# front-proxy tests (test/fixtures/nginx.ts) and redis-server for the shared-state tests
# (test/fixtures/redis.ts). Idempotent, quick when both are present, and quiet. It never fails the
# build: when a package cannot be installed it prints a one-line notice and those tests skip with
# a visible message.
set -u

notice() { printf 'install-test-deps: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

wanted=()
have nginx || wanted+=(nginx)
have redis-server || wanted+=(redis-server)
[ "${#wanted[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  notice "${wanted[*]} missing and apt-get unavailable; their end-to-end tests will be skipped"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  notice "${wanted[*]} missing and not root; their end-to-end tests will be skipped (install them to run them)"
  exit 0
fi

# The tests start their own nginx and redis-server; keep the packages' services from starting (port
# 80, port 6379). Only when no policy is in place already (container images usually ship one), and
# removed again afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; }
for package in "${wanted[@]}"; do
  if ! { install "$package" || { apt-get update -qq >/dev/null 2>&1 && install "$package"; }; }; then
    notice "apt-get could not install $package; its end-to-end tests will be skipped"
    continue
  fi
  have "$package" || notice "$package installed but not found on PATH or in /usr/sbin, /usr/bin; its end-to-end tests will be skipped"
done
exit 0
