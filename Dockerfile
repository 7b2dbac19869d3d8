# reachd container image.
#
#   docker build -t reachd .
#   docker run -d --name reachd -p 8080:8080 -v reachd-data:/data --stop-timeout 45 reachd
#
# Configuration comes from REACHD_* environment variables (`__` between nested keys,
# e.g. REACHD_PRESENCE__SESSION_TTL_MS=90000) or a file given with `--config` / REACHD_CONFIG.
# The database lives in the /data volume. See "Operations" in README.md.

ARG RUST_VERSION=1.95

# ---- build ------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# The release profile keeps line tables (debug = 1); the image does not need them.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_TERM_COLOR=never

# Dependency layer: build every dependency against stub sources, so that a change to reachd's
# own code does not rebuild them. Rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin reachd \
 && rm -rf src

# The real sources (`.dockerignore` leaves out target/, data/, tests, docs, …). The stub's
# build outputs are removed so that cargo cannot mistake them for up to date (COPY keeps the
# files' original, possibly older, modification times).
COPY . .
RUN rm -rf target/release/.fingerprint/reachd-* \
           target/release/deps/reachd-* target/release/deps/libreachd-* \
           target/release/reachd \
 && touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin reachd \
 && ./target/release/reachd --version

# ---- runtime ----------------------------------------------------------------------------------
# glibc userland (the binary links glibc dynamically; SQLite is compiled in, TLS is rustls with
# built-in roots). ca-certificates is kept for operators who point tools at it; bash is used by
# the HEALTHCHECK below.
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 reachd \
 && useradd --system --uid 10001 --gid reachd --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin reachd \
 && mkdir -p /data \
 && chown reachd:reachd /data

COPY --from=build /src/target/release/reachd /usr/local/bin/reachd

ENV REACHD_LISTEN=0.0.0.0:8080 \
    REACHD_DATABASE=/data/reachd.db

# Declared after the chown, so a fresh named volume starts owned by the reachd user.
VOLUME /data
WORKDIR /data
USER reachd:reachd
EXPOSE 8080

# /readyz: 200 when the database answers and takes a write. No curl in the image: bash's
# /dev/tcp sends a minimal HTTP/1.0 request to the port in REACHD_LISTEN. Orchestrators with
# their own HTTP probes (Kubernetes) should probe /healthz (liveness) and /readyz (readiness)
# directly instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${REACHD_LISTEN##*:} && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 4 head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM starts a graceful shutdown (up to the HTTP shutdown deadline, 30 s by default):
# give `docker stop` more than that (`--stop-timeout 45`, compose `stop_grace_period: 45s`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["reachd"]
CMD ["serve"]
