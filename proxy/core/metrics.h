/*
 * Process-wide counters and gauges, defined once in an X-macro list. The
 * gateway runs one event loop on one thread, so plain integers suffice.
 * Rendered in Prometheus text format by the admin listener.
 */
#ifndef H3G_METRICS_H
#define H3G_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* X(name, kind, help) with kind counter or gauge. */
#define H3G_METRICS(X)                                                         \
  X(quic_datagrams_received, counter, "UDP datagrams read")                    \
  X(quic_datagrams_sent, counter, "UDP datagrams written")                     \
  X(quic_send_batches, counter, "sendmsg/sendmmsg system calls")               \
  X(quic_recv_batches, counter, "UDP read callbacks carrying datagrams")       \
  X(quic_connections_accepted, counter, "QUIC connections created")            \
  X(quic_connections_v2, counter, "handshakes completed in QUIC v2 (RFC 9369)") \
  X(quic_connections_active, gauge, "QUIC connections open now")               \
  X(quic_connections_refused, counter, "Initials refused (limits, drain)")     \
  X(quic_version_negotiations, counter, "Version Negotiation packets sent")    \
  X(quic_stateless_resets_sent, counter, "Stateless Reset packets sent")       \
  X(quic_retries_sent, counter, "Retry packets sent")                         \
  X(quic_invalid_tokens, counter, "Initials refused for a bad Retry token")   \
  X(quic_handshakes_capped_source, counter,                                    \
    "Initials not accepted: max_handshakes_per_source")                       \
  X(quic_handshakes_capped_total, counter,                                     \
    "Initials not accepted: max_unvalidated_handshakes")                      \
  X(quic_new_tokens_sent, counter, "NEW_TOKEN tokens issued")                  \
  X(quic_new_tokens_accepted, counter, "Initials with a valid NEW_TOKEN token") \
  X(quic_new_tokens_rejected, counter,                                         \
    "NEW_TOKEN tokens invalid, expired or from another address")              \
  X(quic_packets_dropped, counter, "datagrams ngtcp2 or we discarded")         \
  X(quic_socket_errors, counter,                                               \
    "one-off UDP socket errors survived (e.g. SOCK_DESTROY)")                 \
  X(quic_socket_failed, gauge,                                                 \
    "1 once the UDP socket failed for good: HTTP/3 no longer served")         \
  X(quic_path_validations_succeeded, counter,                                  \
    "client paths validated (PATH_CHALLENGE answered)")                        \
  X(quic_path_validations_failed, counter,                                     \
    "path validations that timed out (the old path is used again)")           \
  X(quic_migrations, counter,                                                  \
    "connections that moved to a new client address and kept going")         \
  X(quic_resumptions, counter, "QUIC handshakes that resumed a TLS session")  \
  X(quic_early_data_accepted, counter, "QUIC handshakes that accepted 0-RTT")  \
  X(h3_early_requests, counter, "requests received as 0-RTT early data")      \
  X(h3_early_forwarded, counter,                                              \
    "0-RTT requests sent upstream before the handshake (Early-Data: 1)")      \
  X(h3_early_held, counter, "0-RTT requests held until the handshake")        \
  X(h3_early_retries, counter, "early requests answered 425, sent again")     \
  X(h3_streams_opened, counter, "request streams opened by clients")           \
  X(h3_streams_active, gauge, "request streams open now")                      \
  X(h3_streams_reset_by_client, counter, "streams reset by the client")        \
  X(h3_streams_reset_by_gateway, counter, "streams the gateway reset")         \
  X(h3_malformed_requests, counter, "requests refused as malformed")           \
  X(h3_excessive_load_closes, counter, "connections closed for rapid reset")  \
  X(h3_protocol_error_closes, counter,                                         \
    "connections closed for a client's HTTP/3 or QPACK error")                 \
  X(requests_total, counter, "requests that reached the bridge")               \
  X(requests_unrouted, counter, "requests no [route] matched (421/404)")       \
  X(request_body_timeouts, counter, "requests ended: body stalled (408)")     \
  X(responses_1xx, counter, "interim responses forwarded")                     \
  X(responses_2xx, counter, "final responses 2xx")                             \
  X(responses_3xx, counter, "final responses 3xx")                             \
  X(responses_4xx, counter, "final responses 4xx")                             \
  X(responses_5xx, counter, "final responses 5xx")                             \
  X(responses_generated, counter, "error responses made by the gateway")       \
  X(request_body_bytes, counter, "request body bytes taken from clients")      \
  X(response_body_bytes, counter, "response body bytes handed to clients")     \
  X(upstream_connects, counter, "upstream TCP connections opened")             \
  X(upstream_connect_failures, counter, "upstream connects that failed")       \
  X(upstream_reuses, counter, "requests sent on a kept-alive connection")      \
  X(upstream_conns_busy, gauge, "upstream connections held by requests")       \
  X(upstream_conns_idle, gauge, "upstream connections idle in the pool")       \
  X(upstream_conns_closed, counter, "upstream connections closed")             \
  X(upstream_conns_poisoned, counter, "connections closed as not reusable")    \
  X(upstream_queue_waiting, gauge, "requests waiting for a connection")        \
  X(upstream_queue_rejected, counter, "requests refused: wait queue full")     \
  X(upstream_timeouts, counter, "connect or response timeouts")                \
  X(upstream_malformed_responses, counter, "responses refused as malformed")   \
  X(upstream_early_responses, counter,                                         \
    "complete responses before the request body went out (passed on)")        \
  X(upstream_read_pauses, counter, "times upstream reads paused (backpressure)") \
  X(request_window_grows, counter, "request body windows doubled (autotuning)") \
  X(buffer_chunks_active, gauge, "32 KiB body buffer chunks held by streams")  \
  X(buffer_chunks_pooled, gauge, "32 KiB chunks kept free for reuse")          \
  X(bridges_active, gauge, "requests held by the bridge now (every protocol)") \
  X(reloads, counter, "configuration reloads that took effect")               \
  X(reload_failures, counter,                                                  \
    "reloads refused (the configuration in use stays)")                       \
  X(tunnels_open, gauge, "WebSocket tunnels open or being opened now")       \
  X(tunnels_opened, counter, "WebSocket tunnels opened (upstream said 101)")  \
  X(tunnels_refused, counter,                                                  \
    "WebSocket requests that did not become tunnels (any reason)")             \
  X(tunnel_bytes_up, counter, "tunnel bytes from clients to upstreams")       \
  X(tunnel_bytes_down, counter, "tunnel bytes from upstreams to clients")     \
  X(upstream_conns_active, gauge,                                              \
    "upstream connections alive (connecting, busy, idle or closing)")         \
  X(health_checks, counter, "active health checks of upstream servers ended") \
  X(health_check_failures, counter, "active health checks that failed")       \
  X(upstreams_unhealthy, gauge, "upstream servers out by their health check")  \
  X(memory_trims, counter,                                                     \
    "free memory given back to the system after activity stopped")           \
  X(memory_trim_us, counter, "CPU time those trims took, microseconds")       \
  X(tcp_connections_accepted, counter, "TCP connections accepted (TLS + plain)") \
  X(tcp_connections_active, gauge, "TCP connections open now")                \
  X(tcp_connections_refused, counter, "TCP connections closed: over the limit") \
  X(tcp_handshake_failures, counter, "TLS handshakes that failed or timed out") \
  X(tcp_resumptions, counter, "TLS handshakes that resumed a session (TCP)")  \
  X(tcp_timeouts, counter, "TCP connections closed by idle/header timeouts")  \
  X(h1_requests, counter, "HTTP/1.1 requests received on the TCP listeners")  \
  X(h1_malformed_requests, counter, "HTTP/1.1 requests refused (400/431/501)") \
  X(h1_redirects, counter, "requests answered 308 by the redirect listener") \
  X(h2_connections, counter, "TCP connections that negotiated HTTP/2")       \
  X(h2_streams_opened, counter, "HTTP/2 request streams opened by clients")  \
  X(h2_streams_active, gauge, "HTTP/2 request streams open now")              \
  X(h2_streams_reset_by_client, counter, "HTTP/2 streams reset by the client") \
  X(h2_streams_reset_by_gateway, counter, "HTTP/2 streams the gateway reset") \
  X(h2_malformed_requests, counter, "HTTP/2 requests refused as malformed")  \
  X(h2_rapid_reset_goaways, counter, "HTTP/2 connections ended: reset flood")

typedef struct h3g_metrics {
#define H3G_METRIC_FIELD(name, kind, help) int64_t name;
  H3G_METRICS(H3G_METRIC_FIELD)
#undef H3G_METRIC_FIELD
} h3g_metrics;

extern h3g_metrics h3g_stats;

#define H3G_INC(name) (h3g_stats.name++)
#define H3G_ADD(name, n) (h3g_stats.name += (int64_t)(n))
#define H3G_DEC(name) (h3g_stats.name--)

/*
 * Writes every metric in Prometheus text format ("h3gate_<name> <value>")
 * into buf. Returns the length written, or the length needed if cap is too
 * small (nothing is cut mid-line).
 */
size_t h3g_metrics_render(char *buf, size_t cap);

#endif /* H3G_METRICS_H */
