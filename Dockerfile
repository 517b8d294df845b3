# syntax=docker/dockerfile:1
# Build: docker build -t keygate .
# Run:   docker run --rm -p 8080:8080 -p 8081:8081 -v "$PWD/config:/etc/keygate" keygate
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin keygate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 curl=7.88.1-10+deb12u14 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/keygate --create-home keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
COPY config/ /etc/keygate/
USER 10001
ENV KEYGATE_CONFIG=/etc/keygate/keygate.yaml
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8081/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:8081"]
