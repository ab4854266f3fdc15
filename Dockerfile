# cnfguard image (the default target, built last):
#   docker build -t cnfguard .
#   podman build --format docker -t cnfguard .     # podman/buildah: without --format docker the
#                                                   # OCI format drops HEALTHCHECK (with a warning)
#   cnfguard dev-certs --key-mode 0644 ./certs      # keys the image's uid 10001 can read through -v
#   docker run --read-only -v "$PWD/cnfguard.yaml:/etc/cnfguard/cnfguard.yaml:ro" -v "$PWD/certs:/tls:ro" -p 127.0.0.1:8443:8443 cnfguard
# (cnfguard.yaml with tls.cert /tls/tls.crt and tls.key /tls/tls.key, the names dev-certs writes.)
# Keys kept 0600 instead: add `--user "$(id -u):$(id -g)"` to docker run (the image's files are
# readable by any uid), or `sudo chown -R 10001:10001 certs`.
# The demo authorization server of deploy/docker-compose.yml (not for production):
#   docker build --target authorization-server -t cnfguard-authorization-server .
#
# Node 24 can run the TypeScript sources directly (type stripping); the image also holds them
# compiled to JS (the build stage), which bin/cnfguard.js prefers, and the production dependencies. Everything is owned by root and read-only to
# the runtime user (10001), and nothing is written at run time: `--read-only` / readOnlyRootFilesystem work.
#
# The base image is pinned by digest (the multi-arch index of node:24-slim), so a rebuild gets the
# same Node and Debian until someone bumps it on purpose. Refresh with
#   docker buildx imagetools inspect node:24-slim     (the "Digest:" line)
# and rebuild; override for a one-off with --build-arg NODE_IMAGE=node:24-slim.
# No `# syntax=` line: BuildKit's built-in frontend reads this file, nothing is fetched for it.
ARG NODE_IMAGE=node:24-slim@sha256:f752e4821362614eab35016f01dea3af61d2f59d0445381c25683e4331520a7b

# ---- production dependencies (npm ci --omit=dev) ----
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no production dependency has an install script; the dev-only `node` package
# (which fetches a Node binary) is omitted anyway: the image's own Node 24 runs cnfguard.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# ---- all dependencies, for the demo authorization server (oidc-provider is a devDependency) ----
FROM ${NODE_IMAGE} AS dev-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund && npm cache clean --force

# ---- the production build: cmd/cnfguard.ts bundled with its libraries into dist/ by esbuild
# (npm run build, scripts/build.ts), which bin/cnfguard.js runs instead of type-stripping the
# sources: less RSS and a faster start ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY --from=dev-deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY scripts/build.ts scripts/node-builtins.ts ./scripts/
COPY cmd ./cmd
COPY src ./src
RUN npm run build

# ---- the demo authorization server: deploy/docker-compose.yml builds this target ----
FROM ${NODE_IMAGE} AS authorization-server
WORKDIR /app
COPY --from=dev-deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY src ./src
COPY demo ./demo
USER 10001:10001
EXPOSE 9443
ENTRYPOINT ["node", "demo/serve-authorization-server.ts"]

# ---- cnfguard (default target) ----
FROM ${NODE_IMAGE} AS cnfguard
ENV NODE_ENV=production
# `run` releases start-up's memory with V8's gc() (src/serve/settle-memory.ts); given here, the
# launcher need not re-execute node to get it (~70 ms of start-up CPU). A NODE_OPTIONS of your own
# replaces this one: the launcher then re-executes `run` with --expose-gc itself.
ENV NODE_OPTIONS=--expose-gc
WORKDIR /app
RUN groupadd --system --gid 10001 cnfguard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cnfguard \
 && ln -s /app/bin/cnfguard.js /usr/local/bin/cnfguard
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY bin ./bin
COPY cmd ./cmd
COPY src ./src
# After the sources: the launcher runs dist/ only when it is newer than every source.
COPY --from=build /app/dist ./dist
USER 10001:10001
# listen.port (TLS) and admin.port (/healthz /readyz /metrics) of the config.
EXPOSE 8443 9090
# The admin listener defaults to 127.0.0.1:9090, which is where this check runs (inside the container).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["cnfguard"]
CMD ["run", "--config", "/etc/cnfguard/cnfguard.yaml"]
