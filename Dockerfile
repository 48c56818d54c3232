# Shared Fail2Ban: the four binaries in a small runtime image (the archiver is the entrypoint;
# the subscriber and publisher are there for hosts that run it in a container too, the admin
# command for operators: docker compose exec archiver shared-f2b-admin list).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shared-f2b-archiver -p shared-f2b-subscriber -p shared-f2b-publisher -p shared-f2b-admin

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/shared-f2b --shell /usr/sbin/nologin shared-f2b \
    && install -d -o shared-f2b -g shared-f2b -m 0750 /var/lib/shared-f2b /var/lib/shared-f2b/spool \
    && install -d -m 0755 /etc/shared-f2b
COPY --from=build /src/target/release/shared-f2b-archiver /src/target/release/shared-f2b-subscriber /src/target/release/shared-f2b-publish /src/target/release/shared-f2b-admin /usr/local/bin/
USER shared-f2b
VOLUME ["/var/lib/shared-f2b"]
ENTRYPOINT ["shared-f2b-archiver", "--config", "/etc/shared-f2b/config.toml"]
CMD ["run"]
