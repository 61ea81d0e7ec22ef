# syntax=docker/dockerfile:1
# Build stage: a static binary.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/wsgate .

# Run stage: distroless, no shell, non-root (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wsgate /usr/local/bin/wsgate
COPY config.hcl /etc/wsgate/config.hcl
# ACME account and certificates (the acme block's storage); keep it across restarts.
VOLUME ["/var/lib/wsgate"]
USER nonroot:nonroot
EXPOSE 443 80 9090
ENTRYPOINT ["/usr/local/bin/wsgate"]
CMD ["run", "-config", "/etc/wsgate/config.hcl"]
