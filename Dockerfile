# Roulette: a small runtime image with the release binary (the demo page, the dashboard and
# their browser bundles are built into it).
#   docker build -t roulette .
#   docker run -p 3001:3001 -e CLIENT_ORIGIN=https://your-app.example roulette

# 1. The binary. The dependencies are built first, from the manifests alone, in a layer of their
#    own: a change to Roulette's sources rebuilds Roulette only, not its ~300 crates.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY loadgen/Cargo.toml loadgen/
RUN mkdir -p src loadgen/src benches public \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > loadgen/src/main.rs && echo 'fn main() {}' > benches/matchmaker.rs \
 && cargo build --release --locked --bin roulette \
 && rm -rf src loadgen/src benches public
COPY . .
# The placeholder build left newer timestamps than the copied sources: make cargo see the change.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin roulette \
 && strip target/release/roulette

# 2. The runtime: Debian slim, curl for the health check, an unprivileged user with a fixed id
#    (deploy/k8s/deployment.yaml's runAsUser names it).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 roulette \
 && useradd --system --uid 10001 --gid 10001 --home-dir /opt/roulette --shell /usr/sbin/nologin roulette
WORKDIR /opt/roulette
COPY --from=build /src/target/release/roulette /usr/local/bin/roulette
# Bans and recent reports (DATA_DIR): mount a volume here to keep them across containers.
RUN mkdir -p /var/lib/roulette && chown 10001:10001 /var/lib/roulette
VOLUME /var/lib/roulette
ENV HOST=0.0.0.0 \
    PORT=3001 \
    NODE_ENV=production \
    LOG_FORMAT=json \
    DATA_DIR=/var/lib/roulette
USER 10001:10001
EXPOSE 3001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
CMD ["roulette"]
