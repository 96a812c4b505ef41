# Roulette: a small runtime image with the release binary, the demo page and the browser bundles.
#   docker build -t roulette .
#   docker run -p 3001:3001 -e CLIENT_ORIGIN=https://your-app.example roulette

# 1. The browser bundles (socket.io-client for the demo page, Chart.js for the dashboard).
FROM node:20-bookworm-slim AS assets
WORKDIR /clients
COPY clients/package.json clients/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# 2. The binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin roulette \
 && strip target/release/roulette

# 3. The runtime: Debian slim, curl for the health check, an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /opt/roulette --shell /usr/sbin/nologin roulette
WORKDIR /opt/roulette
COPY --from=build /src/target/release/roulette /usr/local/bin/roulette
COPY public/ /opt/roulette/public/
COPY --from=assets /clients/node_modules/socket.io-client/dist/ /opt/roulette/vendor/socket.io/
COPY --from=assets /clients/node_modules/chart.js/dist/ /opt/roulette/vendor/chart.js/
ENV HOST=0.0.0.0 \
    PORT=3001 \
    NODE_ENV=production \
    LOG_FORMAT=json \
    STATIC_DIR=/opt/roulette/public \
    CLIENT_BUNDLE_DIR=/opt/roulette/vendor/socket.io \
    CHART_BUNDLE_DIR=/opt/roulette/vendor/chart.js
USER roulette
EXPOSE 3001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
CMD ["roulette"]
