# Signet's container image: `docker build -t signet .`
#
# Stage 1 builds the `signet` binary from the locked dependency set, stripped (the `dist`
# profile: the release build without line tables or symbols); stage 2 is a small
# Debian runtime with only the binary, CA certificates (for HTTPS to S3 and PostgreSQL
# with TLS) and curl for the health check, running as the unprivileged user `signet`.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked -p signet-server --bin signet \
 && install -D -m 0755 target/dist/signet /out/signet

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system signet \
 && useradd --system --gid signet --home-dir /var/lib/signet --shell /usr/sbin/nologin signet \
 && install -d -o signet -g signet /var/lib/signet
COPY --from=builder /out/signet /usr/local/bin/signet
# Listen on every interface inside the container; the embedded defaults (SQLite and
# blobs) go to the volume below unless SIGNET__STORAGE__... names other stores.
ENV SIGNET__SERVER__LISTEN=0.0.0.0:5000 \
    SIGNET__STORAGE__DATA_DIR=/var/lib/signet \
    SIGNET__LOG__FORMAT=json
VOLUME /var/lib/signet
USER signet
WORKDIR /var/lib/signet
EXPOSE 5000
# Liveness only: /readyz (database and blob store) is for load balancers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:5000/healthz || exit 1
# SIGTERM drains (see README, "Operations"); give `docker stop` more than
# drain_secs + shutdown_timeout_secs (e.g. `--time 40`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["signet"]
CMD ["serve"]
