// Package proxy owns a relayed WebSocket pair: the backend dial and handshake (dial.go), and the
// frame relay between a client connection and a backend connection (relay.go): two pumps, one
// per direction, that parse every frame with wsframe, enforce size and rate limits, answer pings
// locally, send keepalive pings, and translate close frames as DESIGN.md's close table says.
//
// Hot-path rules: no allocation per frame in steady state, payloads stream through pooled
// chunks of ChunkSize bytes (a frame larger than that is re-fragmented, which RFC 6455 section
// 5.4 allows an intermediary to do when no extension is negotiated), and a connection holds no
// pooled buffer while it is idle. On Linux, large backend-to-client payloads between plain
// sockets skip user space: they go socket to socket through a pooled pipe (splice_linux.go),
// with the same frames on the wire. Runs of whole small messages in a read buffer are relayed
// in one pass (run.go), also with the same frames on the wire.
package proxy
