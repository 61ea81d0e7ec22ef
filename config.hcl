# wsgate configuration: the documented example.
#
# Every field appears here with its default, its meaning and what it costs. Check a file with
#   wsgate validate -config config.hcl
# Sizes are strings with units, binary ("512B", "64KiB", "1MiB", "1GiB") or decimal ("10KB",
# "1MB"), or plain numbers of bytes. Durations are Go duration strings ("500ms", "30s", "5m").
# Where a field's comment says so, 0 (or "0") means unlimited / off. Leaving a field out (or
# setting it to null) gives its default. Relative file paths are relative to the working
# directory.
#
# Note: the "public" listener below really asks Let's Encrypt for certificates when run; for a
# local try-out use `wsgate demo` or delete the "public" listener.

# SIGTERM/SIGINT: stop accepting, send 1001 "going away" to both sides of every connection and
# wait this long for the close handshakes before exiting. Default "30s"; "0" closes everything
# at once. Costs only shutdown time.
drain_timeout = "30s"

# listen "NAME": one listening socket. Repeatable; names are unique and routes refer to them.
listen "public" {
  # host:port to accept on. Required. ":443" is every interface.
  address = ":443"

  # Concurrent connections on this listener; handshakes beyond it get 503. Default 0 = no cap.
  # Each open connection costs two sockets (client + backend) and roughly 10-20 KiB while idle.
  max_connections = 50000

  # CIDRs (or bare IPs) whose X-Forwarded-For / Forwarded header is believed for the client IP
  # (per-IP limits, logs). Default [] = the TCP peer is the client. List only proxies you run,
  # for example ["10.0.0.0/8"]: anyone else could forge the header and dodge per-IP limits.
  trusted_proxies = []

  # tls: with it the listener serves wss://, without it plain ws://. Takes either an acme block
  # or certificate files, never both.
  tls {
    # Automatic certificates (certmagic). Certificates are obtained at start and renewed in the
    # background; the first start needs the CA to reach this host.
    acme {
      # Host names to get certificates for. Required unless on_demand is set. Wildcards need
      # DNS-01, which is not supported.
      domains = ["ws.example.com"]
      # Account email for expiry notices. Default "" = register without one.
      email = "ops@example.com"
      # ACME directory URL. Default Let's Encrypt production (below); use
      # "https://acme-staging-v02.api.letsencrypt.org/directory" while testing, because
      # production enforces tight rate limits.
      ca = "https://acme-v02.api.letsencrypt.org/directory"
      # PEM file of a private CA to trust when talking to the ACME server (e.g. pebble, step-ca).
      # Default "" = system roots.
      ca_root = ""
      # Directory for accounts, keys and certificates; must persist across restarts or each
      # start re-issues (and hits CA rate limits). Default $XDG_DATA_HOME/wsgate/certs, or
      # ~/.local/share/wsgate/certs.
      storage = "/var/lib/wsgate/certs"
      # Challenge types: "http-01" (the CA connects to http_address, port 80) and "tls-alpn-01"
      # (answered on this listener, port 443). Default both.
      challenges = ["http-01", "tls-alpn-01"]
    }

    # On-demand issuance: get a certificate for a name during its first handshake (that
    # handshake waits seconds for the CA). Only with acme. Needs ask, allow or both, so that
    # strangers cannot make the gateway burn CA rate limits on arbitrary names. Default: off.
    # on_demand {
    #   ask   = "http://127.0.0.1:8080/check-domain"  # GET ?domain=NAME; 200 approves NAME
    #   allow = ["*.example.com"]                      # approved without asking
    # }

    # Or certificate files instead of acme (files are read at start and on reload; they need
    # not exist when the configuration is validated):
    #   cert_file = "/etc/wsgate/cert.pem"   # PEM chain, leaf first
    #   key_file  = "/etc/wsgate/key.pem"    # PEM private key
    # and/or several pairs, chosen by SNI:
    #   certificate {
    #     cert_file = "/etc/wsgate/other.pem"
    #     key_file  = "/etc/wsgate/other.key"
    #   }

    # Oldest TLS version accepted: "1.2" (default) or "1.3". "1.3" drops old clients and
    # saves nothing measurable.
    min_version = "1.2"

    # Key exchanges to allow, from "x25519mlkem768" (post-quantum hybrid), "x25519",
    # "secp256r1", "secp384r1", "secp521r1"; Go picks among them in that order. Default: all of
    # them. Dropping "x25519mlkem768" saves about a tenth of the CPU of a full handshake (and
    # 1 KB each way) at the cost of post-quantum protection (nginx: ssl_ecdh_curve).
    # curves = ["x25519", "secp256r1"]

    # Address of a plain HTTP listener that answers ACME HTTP-01 challenges and redirects
    # everything else to https://. Default "" = none (then only tls-alpn-01 can succeed).
    http_address = ":80"
  }
}

listen "dev" {
  address = "127.0.0.1:9000" # no tls block: plain ws://, for local testing
}

# admin: 0 or 1 block. Serves GET /metrics (Prometheus), /healthz, /readyz, /debug/pprof/ and
# POST /reload. Default: none.
admin {
  # host:port. Required in the block. Keep it private (loopback or an internal network): it has
  # no authentication, metrics reveal traffic, and POST /reload re-reads the configuration.
  address = "127.0.0.1:9090"
}

# log: 0 or 1 block.
log {
  # "json" or "text". Default: json, or text when stdout is a terminal.
  format = "json"
  # "debug", "info", "warn" or "error". Default "info". "debug" logs every handshake and close
  # and costs CPU under load.
  level = "info"
}

# limits: the defaults for every route; a route's own limits block overrides single fields.
limits {
  # Largest frame payload accepted from either side; a bigger one is closed with 1009.
  # Default "1MiB"; "0" = unlimited. Frames are streamed in chunks, so this costs no memory.
  max_frame_size = "1MiB"

  # Largest message (all fragments together); 1009 beyond it. Default "4MiB"; "0" = unlimited.
  # Messages are not assembled unless a feature needs it (validate_utf8 keeps only a few bytes).
  max_message_size = "4MiB"

  # Client->backend messages per second (token bucket of size burst). Default 100;
  # 0 = unlimited. Costs one limiter (~100 bytes) per connection.
  messages_per_second = 100

  # Client->backend bytes per second. Default "1MiB"; "0" = unlimited. Large frames are
  # charged chunk by chunk, so a frame bigger than the bucket still passes, slowly.
  bytes_per_second = "1MiB"

  # Messages a client may send above messages_per_second in one go. Default 200; at least 1.
  burst = 200

  # What exceeding a rate does: "throttle" (default: stop reading from the sender until the
  # rate allows; TCP back-pressure does the rest) or "close" (close with 1008).
  on_limit = "throttle"

  # Time for a client to send its complete upgrade request after connecting. Default "10s";
  # "0" = no timeout (slowloris risk: each stalled client holds a socket).
  handshake_timeout = "10s"

  # Close both sides with 1001 "idle timeout" after this long without a data frame either way
  # (checked every quarter of it: the close comes 1 to 1.25 times this after the last data).
  # Default "5m"; "0" = never. Pings do not count as activity.
  idle_timeout = "5m"

  # Ping each side this often to detect dead peers and keep NAT mappings alive. Default "30s";
  # "0" = no pings. Each ping costs a few bytes per connection per interval. A connection's
  # first ping comes at a random point in the last quarter of the first interval, so that
  # connections opened together do not ping together.
  ping_interval = "30s"

  # Close a side that does not answer a ping within this long. Default "10s"; "0" = wait forever.
  pong_timeout = "10s"

  # After forwarding a close, wait this long for the other side's close reply before answering
  # it ourselves. Default "5s"; "0" = no wait.
  close_timeout = "5s"

  # A write to a peer that cannot finish within this long cuts that peer (a peer that stops
  # reading would otherwise pin buffers and the other side). The time counts from when the
  # peer's socket buffer was found full, so writes that never wait cost no timer. A close
  # from such a peer is still forwarded at once, and the connection then ends close_timeout
  # later (the reply cannot reach a peer that does not read). Default "10s"; "0" = no timeout.
  write_timeout = "10s"

  # TCP keepalive probes on both sockets of a connection (client and backend): the first after
  # this long without traffic, then one every this long; the kernel drops the connection after
  # 9 unanswered. Default "0" = off, as in nginx and HAProxy: the keepalive pings
  # (ping_interval) already find a dead peer, and probes cost packets and timers for every idle
  # connection. Set it when pings are off and something between needs traffic to keep state.
  tcp_keepalive = "0"

  # Backend TCP dial timeout; on expiry the client gets 503. Default "5s"; "0" = OS default.
  dial_timeout = "5s"

  # Time for the backend to answer our handshake with 101; on expiry the client gets 504.
  # Default "10s"; "0" = no timeout.
  backend_handshake_timeout = "10s"

  # Concurrent connections from one client IP; beyond it handshakes get 429. Default 1000;
  # 0 = no cap. Tracking costs one map entry per active IP.
  max_connections_per_ip = 1000

  # Handshakes per second from one client IP (burst of the same size); beyond it 429 with
  # Retry-After. Default 50; 0 = unlimited. Costs one limiter per recently seen IP.
  handshakes_per_ip_per_second = 50

  # Concurrent connections per route; beyond it handshakes get 503. Default 0 = no cap.
  max_connections = 0

  # Backend->client messages per second, per connection. Default 0 = off (backends are
  # trusted). When on, on_limit applies and costs one limiter per connection.
  backend_messages_per_second = 0

  # Backend->client bytes per second, per connection. Default "0" = off.
  backend_bytes_per_second = "0"

  # Burst of the backend->client message limiter. Default: the value of burst. At least 1.
  backend_burst = 200
}

# route "PATH": where a handshake for PATH goes. The longest matching prefix wins; a path ending
# in "/" matches its subtree, one without matches exactly. Repeatable; paths are unique.
route "/chat/" {
  # The backend's WebSocket URL (ws:// only; TLS ends at the gateway). Required.
  backend = "ws://127.0.0.1:8001/ws"

  # true: remove the route path (less its trailing "/") from the request path before appending
  # it to the backend path: /chat/room/1 -> /ws/room/1. Default false: /ws/chat/room/1.
  strip_prefix = true

  # Sec-WebSocket-Protocol values forwarded to the backend; others in the client's offer are
  # dropped. Default [] = forward the offer unchanged.
  subprotocols = ["chat.v1"]

  # Origins allowed to connect (browsers send Origin); others get 403. Default [] = any
  # origin, which lets any web page open connections with your users' cookies. "*" = any.
  allowed_origins = ["https://example.com"]

  # Check that text messages are valid UTF-8 (1007 on failure). Default false. Costs one pass
  # over text payloads (about 1 GB/s per core) and a few bytes of state.
  validate_utf8 = true

  # Listener names this route is served on. Default [] = every listener. Here: production
  # only, never on the plain dev listener.
  listen = ["public"]

  # true: refuse plain ws:// handshakes on this route with 403. Default false.
  tls_only = true

  # Pass Cookie and Authorization headers to the backend. Default true; false strips them
  # (when the backend must not see users' credentials).
  forward_auth = true

  # Overrides single fields of the top-level limits for this route.
  limits {
    max_message_size = "64KiB"
  }
}

# A route for local testing on the dev listener only; exact path (no trailing "/").
route "/echo" {
  backend = "ws://127.0.0.1:8002/"
  listen  = ["dev"]
  limits {
    messages_per_second = 0 # unlimited while testing
    idle_timeout        = "1m"
  }
}
