# syntax=docker/dockerfile:1

# Build stage: the toolchain comes from rust-toolchain.toml, installed in a layer of its own
# (it changes rarely); the wasm32-wasip2 target is added there too (build.rs compiles the
# built-in Slack connector). Dependencies are cached across builds in BuildKit cache mounts (the
# registry and the target directory), so a change to the hub's code recompiles the hub only.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add wasm32-wasip2
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CI=true cargo build --release --locked --package integrations-hub \
    && install -D --mode=0755 target/release/integrations-hub /out/integrations-hub

# Runtime stage: a small Debian with CA certificates, running as an unprivileged user.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/integrations-hub hub \
    && mkdir -p /var/lib/integrations-hub/data/connectors \
    && chown -R hub:hub /var/lib/integrations-hub
COPY --from=build /out/integrations-hub /usr/local/bin/integrations-hub
USER 10001:10001
WORKDIR /var/lib/integrations-hub
# Listening on all interfaces inside the container requires IH_API_KEYS and IH_ENCRYPTION_KEY
# (or IH_ENCRYPTION_KEY_FILE): the hub refuses to start without them on a non-loopback address.
ENV IH_BIND=0.0.0.0:8000 \
    IH_DATABASE_URL=sqlite:///var/lib/integrations-hub/data/integrations-hub.db \
    IH_CONNECTORS_DIR=/var/lib/integrations-hub/data/connectors
VOLUME ["/var/lib/integrations-hub/data"]
EXPOSE 8000
# Ready when the database answers (/readyz); `health --live` asks only whether the process answers.
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/integrations-hub", "health"]
ENTRYPOINT ["/usr/local/bin/integrations-hub"]
CMD ["serve"]
