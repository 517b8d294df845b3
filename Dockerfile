# keygate container image.
#   docker build -t keygate .
#   docker run --rm -p 8080:8080 -p 8081:8081 -v keygate-data:/var/lib/keygate \
#     -e KEYGATE_ADMIN_TOKEN=change-me keygate serve --upstream http://your-api:9000
# Probes: GET :8081/healthz (liveness) and GET :8081/readyz (readiness) need no credentials.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin keygate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/keygate --create-home keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
COPY config/container.yaml /etc/keygate/keygate.yaml
COPY config/policy.yaml /etc/keygate/policy.yaml
USER 10001:10001
ENV KEYGATE_CONFIG=/etc/keygate/keygate.yaml
VOLUME ["/var/lib/keygate"]
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
