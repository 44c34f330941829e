/*
 * HTTP/1.1 on the upstream side (RFC 9112): writes request heads and chunk
 * framing, and parses responses strictly. The only module that includes
 * llhttp; its lenient flags stay off.
 *
 * Depends on common.h and http_headers.h.
 */
#ifndef H3G_H1_CODEC_H
#define H3G_H1_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "http_headers.h"

/* What an HTTP/1.1 request head is built from. */
typedef struct h3g_h1_request {
  const uint8_t *method;
  size_t methodlen;
  const uint8_t *target; /* origin-form path and query, or "*" */
  size_t targetlen;
  const uint8_t *host; /* becomes the Host field */
  size_t hostlen;
  /* Regular fields to forward as they are (already validated and without
   * hop-by-hop fields); cookie fields are joined with "; " into one line. */
  const h3g_field *fields;
  size_t nfields;
  /* Extra fields the gateway adds (forwarding fields), written after. */
  const h3g_field *extra;
  size_t nextra;
  /* >= 0: Content-Length is sent. -1: the body is sent chunked
   * (Transfer-Encoding: chunked). -2: no body and no length field (the
   * request ended with its headers, for methods that carry no body). */
  int64_t content_length;
} h3g_h1_request;

/*
 * Writes the request head into buf: "METHOD target HTTP/1.1\r\n", then
 * "Host: host\r\n" (first, RFC 9112 §3.2), then the fields in order as
 * "name: value\r\n" with every cookie field joined into one line where the
 * first one was, then the extra fields, then "Content-Length: N" or
 * "Transfer-Encoding: chunked" as content_length says, then "\r\n".
 * Hop-by-hop and framing fields (H3G_FIELD_HOP_BY_HOP, H3G_FIELD_FRAMING)
 * in fields are skipped; extra is written as it is. Nothing is validated:
 * method, target, host and fields must come from h3g_request_validate.
 * Returns the number of bytes written, or H3G_ERR_TOOBIG if cap is too
 * small (nothing useful is left in buf then). Bytes needed: at most
 * method + target + host + section_size of the fields and extra (as
 * h3g_headers counts it) + 64.
 */
int64_t h3g_h1_write_request(const h3g_h1_request *req, uint8_t *buf,
                             size_t cap);

/*
 * Writes the line that starts a chunk of len bytes ("<hex>\r\n", lowercase
 * hex) into buf (cap >= 18). Returns its length, or 0 if cap is too small.
 * The chunk's data must be followed by "\r\n" (see H3G_H1_CRLF). len 0
 * writes "0\r\n", which begins the last chunk: never send an empty chunk.
 */
size_t h3g_h1_chunk_header(size_t len, uint8_t *buf, size_t cap);
#define H3G_H1_CRLF "\r\n"
/* The last chunk when there are no trailers: "0\r\n\r\n". */
#define H3G_H1_LAST_CHUNK "0\r\n\r\n"

/*
 * Writes the last chunk followed by trailer fields and the final CRLF
 * ("0\r\n" fields "\r\n"). The fields are written as they are (check them
 * with h3g_trailers_validate). Returns the length or H3G_ERR_TOOBIG.
 */
int64_t h3g_h1_write_trailers(const h3g_field *fields, size_t n, uint8_t *buf,
                              size_t cap);

typedef struct h3g_h1_parser h3g_h1_parser;

/*
 * What the response parser reports. Every callback returns 0 to go on, or a
 * negative H3G_ERR_* code that stops parsing and is returned by feed (or
 * finish). Field lists and data pointers are valid only during the call.
 * A callback may be NULL. A callback must not reset or free the parser.
 */
typedef struct h3g_h1_callbacks {
  /* A complete response head. interim is 1 for 1xx responses (which are
   * followed by another head); a 101 is reported as a protocol error, not
   * here, unless an upgrade was expected (then it is final, interim 0). The fields are unfiltered, names as received, values without
   * surrounding whitespace; the list may be modified (h3g_response_filter
   * lowercases in place). Status is 100..599. Any Content-Length is as
   * received: 1xx, 204 and 304 responses and responses to HEAD never have
   * a body whatever it says. */
  int (*on_head)(void *ud, int status, h3g_headers *fields, int interim);
  /* Body bytes after transfer decoding (chunk framing removed); data points
   * into the buffer given to the h3g_h1_parser_feed call that is running,
   * so it is zero-copy and valid only during this call. Never called with
   * len 0. */
  int (*on_body)(void *ud, const uint8_t *data, size_t len);
  /* Trailer fields of a chunked response, called before on_complete and
   * only if there were any. Hop-by-hop fields and Host have been dropped
   * already; Content-Length or Transfer-Encoding in trailers make the
   * response malformed (RFC 9110 §6.5.1), they never reach here. */
  int (*on_trailers)(void *ud, h3g_headers *fields);
  /* The response is complete (from feed, or from finish for a body that
   * ends when the connection closes). */
  int (*on_complete)(void *ud);
} h3g_h1_callbacks;

/*
 * Creates a parser for responses, ready for a response to a non-HEAD
 * request. max_head_bytes caps the header section of each response head
 * and of the trailers, counted as h3g_headers does (name + value + 32 per
 * field); the reason phrase is capped at the same number of bytes.
 * Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_h1_parser_new(h3g_h1_parser **pp, const h3g_h1_callbacks *cb, void *ud,
                      size_t max_head_bytes);
void h3g_h1_parser_free(h3g_h1_parser *p);

/*
 * Prepares for the response to a new request; head_request is 1 when the
 * request method was HEAD (the response then has no body whatever its
 * fields say). Clears any error.
 */
void h3g_h1_parser_reset(h3g_h1_parser *p, int head_request);

/*
 * Parses len bytes, calling back as the response goes. Interim (1xx)
 * responses and the final response may come in one buffer; parsing stops
 * at the end of the final response: *consumed tells how many bytes were
 * used (fewer than len means bytes followed the complete response; they
 * were not looked at, and as the gateway never pipelines, the caller
 * should not reuse the connection). Once the response is complete, feed
 * consumes nothing and returns 0 until reset.
 *
 * Returns 0, H3G_ERR_PROTO for a malformed response, H3G_ERR_TOOBIG (head
 * or trailers over the cap), or what a callback returned. Errors are
 * sticky: later feed and finish calls return the same code until reset.
 * Malformed means: a bare LF, or a CR not followed by LF, anywhere outside
 * body data (the status line, fields, empty lines before a status line,
 * the end of a head, chunk lines, the CRLF after chunk data, trailers); a
 * bad status line, a version other than HTTP/1.x, a status outside
 * 100..599, a 101; a field name that is not a token (including "name :");
 * CR, LF, NUL, other controls or DEL in a value;
 * obsolete line folding; both Content-Length and Transfer-Encoding; more
 * than one Content-Length field (even with equal values) or a list as its
 * value; a Transfer-Encoding other than exactly one "chunked" (this
 * gateway cannot remove other codings); a bad chunk size; chunk
 * extensions over 1024 bytes in all (llhttp 8.1, Debian 12, also refuses a
 * chunk with more than one extension; 9.x accepts it); Content-Length or
 * Transfer-Encoding among the trailers.
 */
int h3g_h1_parser_feed(h3g_h1_parser *p, const uint8_t *data, size_t len,
                       size_t *consumed);

/*
 * The upstream closed its side. Completes a close-delimited body (calling
 * on_complete) and returns 0; returns 0 without callbacks if the response
 * was already complete or nothing was received since reset; returns
 * H3G_ERR_PROTO if the response was incomplete (truncated, or only interim
 * responses were received), or what on_complete returned.
 */
int h3g_h1_parser_finish(h3g_h1_parser *p);

/*
 * The request being answered asked for an upgrade (a WebSocket handshake):
 * until the next reset, a 101 is reported to on_head as a final response
 * (interim 0) and parsing stops right after its head, so *consumed tells
 * where the new protocol's bytes start; the response is then complete,
 * upgraded, and not keep-alive. Without this call a 101 is malformed.
 */
void h3g_h1_parser_expect_upgrade(h3g_h1_parser *p);

/* 1 once a 101 ended the exchange (see h3g_h1_parser_expect_upgrade). */
int h3g_h1_parser_upgraded(const h3g_h1_parser *p);

/* 1 once the response is complete. */
int h3g_h1_parser_complete(const h3g_h1_parser *p);

/* 1 if bytes of a response were received since reset. */
int h3g_h1_parser_started(const h3g_h1_parser *p);

/*
 * 1 if, after a complete response, the connection may carry another request
 * (HTTP/1.1 without "Connection: close" or HTTP/1.0 with "Connection:
 * keep-alive", a self-delimited body, and no Transfer-Encoding in an
 * HTTP/1.0 response). 0 before completion.
 */
int h3g_h1_parser_keep_alive(const h3g_h1_parser *p);

/* A static description of the last error, for logs ("no error" if none). */
const char *h3g_h1_parser_reason(const h3g_h1_parser *p);

/* ---- requests (the TCP listener's server side) ------------------------ */

typedef struct h3g_h1_request_parser h3g_h1_request_parser;

/* A request head as received. */
typedef struct h3g_h1_request_head {
  const char *method;    /* llhttp's static name, e.g. "GET" */
  const uint8_t *target; /* as received: origin-, absolute-, authority- or
                            asterisk-form */
  size_t targetlen;
  int version_minor;     /* 0 or 1 (HTTP/1.x only) */
  /* Fields in received order, names as received, values trimmed; the list
   * may be modified. Exactly one Host in HTTP/1.1, at most one in 1.0. */
  h3g_headers *fields;
  int64_t body;   /* -1: chunked; >= 0: Content-Length (0: no body) */
  int keep_alive; /* the connection may carry another request after this
                     one (1.1 without "close", 1.0 with "keep-alive", no
                     Transfer-Encoding in 1.0) */
  int upgrade;    /* an Upgrade field was present */
} h3g_h1_request_head;

/*
 * What the request parser reports; each callback returns 0 or a negative
 * H3G_ERR_* code that stops parsing (returned by feed). Pointers are valid
 * only during the call. A callback may be NULL; none may reset or free the
 * parser.
 */
typedef struct h3g_h1_request_callbacks {
  /* The head is complete. When a body follows, parsing pauses right after
   * the head (feed returns), so the caller decides how many body bytes to
   * feed next; without one, on_complete follows in the same feed. */
  int (*on_head)(void *ud, h3g_h1_request_head *head);
  /* Body bytes after chunked decoding; never len 0. The body never holds
   * more bytes than were fed since the head. */
  int (*on_body)(void *ud, const uint8_t *data, size_t len);
  /* Trailer fields of a chunked body, if any, before on_complete; framing,
   * routing and hop-by-hop fields have been dropped. */
  int (*on_trailers)(void *ud, h3g_headers *fields);
  /* The request is complete; parsing stops right after it. */
  int (*on_complete)(void *ud);
} h3g_h1_request_callbacks;

/*
 * Creates a request parser (HTTP/1.0 and 1.1, strict: no llhttp lenient
 * flag). max_head_bytes caps the request line plus the field section, and
 * the trailers, counted as h3g_headers does. Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_h1_request_parser_new(h3g_h1_request_parser **pp,
                              const h3g_h1_request_callbacks *cb, void *ud,
                              size_t max_head_bytes);
void h3g_h1_request_parser_free(h3g_h1_request_parser *p);

/* Prepares for the next request on the connection; clears any error. */
void h3g_h1_request_parser_reset(h3g_h1_request_parser *p);

/*
 * Parses up to len bytes. Stops (returning 0, *consumed < len possibly)
 * after the head and after the complete request; call again with the rest.
 * Once complete, consumes nothing until reset.
 *
 * Returns 0, H3G_ERR_PROTO (malformed: answer 400 and close), H3G_ERR_TOOBIG
 * (head over the cap: 431 and close), or what a callback returned. Errors
 * are sticky until reset. Malformed means, besides llhttp's own refusals
 * (bad request line, unknown method, invalid characters in the target, a
 * field name that is not a token, controls in values, Content-Length with
 * Transfer-Encoding, repeated or list Content-Length, a Transfer-Encoding
 * whose final coding is not chunked, bad chunk sizes): a bare LF, or a CR
 * not followed by LF, anywhere outside body data (as for responses; an
 * empty line before the request line must be CRLF), a version other than
 * HTTP/1.0 or 1.1, obsolete line folding, whitespace before a colon,
 * an empty field name, a Transfer-Encoding other than one "chunked" or any
 * in HTTP/1.0, a missing or repeated Host in HTTP/1.1 or a repeated one in
 * 1.0 (RFC 9112 §3.2), chunk extensions over 1024 bytes, and framing
 * fields among the trailers.
 */
int h3g_h1_request_parser_feed(h3g_h1_request_parser *p, const uint8_t *data,
                               size_t len, size_t *consumed);

/* 1 while a request has started (bytes fed) but its head is incomplete. */
int h3g_h1_request_parser_in_head(const h3g_h1_request_parser *p);

/* 1 after the head, until the request is complete. */
int h3g_h1_request_parser_in_body(const h3g_h1_request_parser *p);

/* 1 once the request is complete. */
int h3g_h1_request_parser_complete(const h3g_h1_request_parser *p);

/* A static description of the last error ("no error" if none). */
const char *h3g_h1_request_parser_reason(const h3g_h1_request_parser *p);

/* "llhttp X.Y.Z", for --version. */
const char *h3g_h1_version(void);

#endif /* H3G_H1_CODEC_H */
