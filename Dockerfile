# airlock in a container, as its own principal (docker-compose.yml runs it).
# Build stage: the release binary. Runtime stage: Debian slim, an unprivileged user, the
# config baked in (owned by root, so airlock reads it and cannot change it), state and
# certificates in volumes.
# Any stable toolchain at or above Cargo.toml's rust-version; the full image has make and a C
# compiler for jemalloc and aws-lc.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin airlock

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/airlock --shell /usr/sbin/nologin airlock \
 && install -d -o airlock -g airlock -m 0755 /var/lib/airlock /var/lib/airlock/certs /var/lib/airlock/ca \
 && install -d -o airlock -g airlock -m 0700 /var/lib/airlock/state
COPY --from=build /src/target/release/airlock /usr/local/bin/airlock
COPY deploy/docker/airlock.toml /opt/airlock/config/airlock.toml
COPY deploy/docker/entrypoint.sh /usr/local/bin/airlock-entrypoint
RUN chmod 0644 /opt/airlock/config/airlock.toml && chmod 0755 /usr/local/bin/airlock-entrypoint
USER airlock
# `docker compose exec airlock airlock agent add NAME` finds the config from here.
WORKDIR /opt/airlock
EXPOSE 8443 8444
ENTRYPOINT ["/usr/local/bin/airlock-entrypoint"]
CMD ["serve"]
