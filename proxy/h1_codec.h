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
  const uint8_t *host;   /* becomes the Host field */
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
 * Writes the request head ("METHOD target HTTP/1.1\r\n" fields "\r\n") into
 * buf. Returns the number of bytes written, or H3G_ERR_TOOBIG if cap is too
 * small (nothing useful is left in buf then).
 */
int64_t h3g_h1_write_request(const h3g_h1_request *req, uint8_t *buf,
                             size_t cap);

/*
 * Writes the line that starts a chunk of len bytes ("<hex>\r\n") into buf
 * (cap >= 18). Returns its length. The chunk's data must be followed by
 * "\r\n" (see H3G_H1_CRLF).
 */
size_t h3g_h1_chunk_header(size_t len, uint8_t *buf, size_t cap);
#define H3G_H1_CRLF "\r\n"
/* The last chunk when there are no trailers: "0\r\n\r\n". */
#define H3G_H1_LAST_CHUNK "0\r\n\r\n"

/*
 * Writes the last chunk followed by trailer fields and the final CRLF.
 * Returns the length or H3G_ERR_TOOBIG.
 */
int64_t h3g_h1_write_trailers(const h3g_field *fields, size_t n, uint8_t *buf,
                              size_t cap);

typedef struct h3g_h1_parser h3g_h1_parser;

/*
 * What the response parser reports. Every callback returns 0 to go on, or a
 * negative H3G_ERR_* code that stops parsing and is returned by feed.
 * Field lists and data pointers are valid only during the call.
 */
typedef struct h3g_h1_callbacks {
  /* A complete response head. interim is 1 for 1xx responses (which are
   * followed by another head); a 101 is reported as a protocol error, not
   * here. The fields are unfiltered, names as received. */
  int (*on_head)(void *ud, int status, h3g_headers *fields, int interim);
  /* Body bytes after transfer decoding; data points into the fed buffer. */
  int (*on_body)(void *ud, const uint8_t *data, size_t len);
  /* Trailer fields of a chunked response (only called if there were any). */
  int (*on_trailers)(void *ud, h3g_headers *fields);
  /* The response is complete. */
  int (*on_complete)(void *ud);
} h3g_h1_callbacks;

/*
 * Creates a parser for responses. max_head_bytes caps the header section of
 * one response (and of trailers). Returns 0 or H3G_ERR_NOMEM.
 */
int h3g_h1_parser_new(h3g_h1_parser **pp, const h3g_h1_callbacks *cb, void *ud,
                      size_t max_head_bytes);
void h3g_h1_parser_free(h3g_h1_parser *p);

/*
 * Prepares for the response to a new request; head_request is 1 when the
 * request method was HEAD (the response then has no body whatever its
 * fields say).
 */
void h3g_h1_parser_reset(h3g_h1_parser *p, int head_request);

/*
 * Parses len bytes. Stops at the end of the response: *consumed tells how
 * many bytes were used (fewer than len means bytes followed the complete
 * response). Returns 0, H3G_ERR_PROTO for a malformed response (bad status
 * line, bad chunk size or extension, obsolete line folding, both
 * Content-Length and Transfer-Encoding, several different Content-Lengths,
 * a 101, invalid characters), H3G_ERR_TOOBIG (head over the cap), or what a
 * callback returned.
 */
int h3g_h1_parser_feed(h3g_h1_parser *p, const uint8_t *data, size_t len,
                       size_t *consumed);

/*
 * The upstream closed its side. Completes a close-delimited body (calling
 * on_complete) and returns 0; returns H3G_ERR_PROTO if the response was
 * incomplete (truncated), or 0 without callbacks if nothing was received
 * since reset.
 */
int h3g_h1_parser_finish(h3g_h1_parser *p);

/* 1 once the response is complete. */
int h3g_h1_parser_complete(const h3g_h1_parser *p);

/* 1 if bytes of a response were received since reset. */
int h3g_h1_parser_started(const h3g_h1_parser *p);

/*
 * 1 if, after a complete response, the connection may carry another request
 * (HTTP/1.1 without "Connection: close", and a self-delimited body).
 */
int h3g_h1_parser_keep_alive(const h3g_h1_parser *p);

/* A static description of the last error, for logs. */
const char *h3g_h1_parser_reason(const h3g_h1_parser *p);

#endif /* H3G_H1_CODEC_H */
