#!/usr/bin/env bash
# `npm test`: the type-check and the lint side by side (one core each), then the tests. Either
# failing fails the run, with its own output; the tests run only when both pass.
set -u
npm run --silent typecheck &
typecheck=$!
npm run --silent lint
lint=$?
wait "$typecheck"
typecheck=$?
if [ "$typecheck" -ne 0 ] || [ "$lint" -ne 0 ]; then
  echo "npm test: typecheck exit $typecheck, lint exit $lint" >&2
  exit 1
fi
exec vitest run "$@"
