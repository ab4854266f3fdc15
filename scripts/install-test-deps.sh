#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond npm, from Debian's packages:
# - nginx, for the front-proxy tests (test/fixtures/nginx.ts);
# - gunicorn (20.x on bookworm) and Jetty 9's jars (jetty9), the real upstream stacks of the
#   differential tests (test/fixtures/upstreams.ts; Jetty runs embedded from a class compiled with
#   the machine's javac, so no systemd service is used);
# - redis-server, for the shared-state tests (test/fixtures/redis.ts starts its own), and
#   redis-sentinel for the failover tests;
# - prometheus (with promtool), which scrapes cnfguard and evaluates the shipped alert rules;
# - python3-jwt, the second-language verifier of the upstream assertion;
# - nghttp2-client (nghttp), an HTTP/2 client that multiplexes many requests on one connection.
# As root it installs them with apt-get and says so on stderr, one line per package; as another
# user it installs nothing.
# Idempotent and quiet, and quick when everything is present (no apt-get at all). It never fails the
# build: what cannot be installed gets a one-line notice and its tests skip with a visible message.
set -u

notice() { printf 'install-test-deps: %s\n' "$*" >&2; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
have_gunicorn() { [ -x /usr/bin/gunicorn ]; }
have_redis() { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; }
have_sentinel() { command -v redis-sentinel >/dev/null 2>&1 || [ -x /usr/bin/redis-sentinel ]; }
have_prometheus() { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; }
have_pyjwt() { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import jwt, cryptography' >/dev/null 2>&1; }
have_nghttp() { command -v nghttp >/dev/null 2>&1; }
have_jetty() { [ -r /usr/share/java/jetty9-server.jar ] && [ -r /usr/share/java/jetty9-servlet.jar ] && [ -r /usr/share/java/servlet-api.jar ]; }

missing=()
have_nginx || missing+=(nginx)
have_gunicorn || missing+=(gunicorn)
have_jetty || missing+=(jetty9)
have_redis || missing+=(redis-server)
have_sentinel || missing+=(redis-sentinel)
have_prometheus || missing+=(prometheus)
have_pyjwt || missing+=(python3-jwt python3-cryptography)
have_nghttp || missing+=(nghttp2-client)
[ ${#missing[@]} -eq 0 ] && exit 0

what="${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  notice "$what missing and apt-get unavailable; the end-to-end tests that need them will be skipped"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  notice "$what missing and not root; the end-to-end tests that need them will be skipped (install them to run those tests)"
  exit 0
fi

# The tests start their own nginx, gunicorn and Jetty; keep the packages' services from starting
# (nginx on port 80, jetty9 on 8080). Only when no policy is in place already (container images
# usually ship one), and removed again afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; }
# One package at a time, so that one that cannot be had does not keep the others out.
updated=no
notice "installing with apt-get (as root, for the end-to-end tests): $what"
for package in "${missing[@]}"; do
  if install "$package"; then continue; fi
  if [ "$updated" = no ]; then
    updated=yes
    apt-get update -qq >/dev/null 2>&1
    install "$package" && continue
  fi
  notice "apt-get could not install $package; the end-to-end tests that need it will be skipped"
done

have_nginx || notice "nginx not found on PATH or at /usr/sbin/nginx; the nginx end-to-end tests will be skipped"
have_gunicorn || notice "gunicorn not found at /usr/bin/gunicorn; the gunicorn upstream tests will be skipped"
have_jetty || notice "Jetty 9 jars not found in /usr/share/java; the Jetty upstream tests will be skipped"
have_sentinel || notice "redis-sentinel not found; the Sentinel failover tests will be skipped"
have_prometheus || notice "prometheus/promtool not found in /usr/bin; the Prometheus rule tests will be skipped"
have_pyjwt || notice "python3-jwt not found for /usr/bin/python3; the Python assertion-verifier test will be skipped"
have_nghttp || notice "nghttp not found; the nghttp end-to-end tests will be skipped"
command -v javac >/dev/null 2>&1 || notice "javac not found; the Jetty upstream tests will be skipped"
exit 0
