/*
 * h3raw: a scriptable HTTP/3 test client that can send malformed requests.
 *
 * h3raw_codec.c holds the parts that do no I/O: QUIC variable-length
 * integers, HTTP/3 frame and QPACK encoding (always Required Insert Count 0,
 * Base 0, never Huffman, so any byte can be sent), and the decoding of a
 * server's field sections (static table, literals, Huffman). h3raw.c holds
 * the script reader, the QUIC connection (ngtcp2 + wolfSSL) and the report.
 */
#ifndef H3RAW_H
#define H3RAW_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte string. _free leaves it empty and reusable. */
typedef struct h3r_bytes {
  uint8_t *data;
  size_t len;
  size_t cap;
} h3r_bytes;

/* Each returns 0, or -1 when memory runs out. */
int h3r_bytes_append(h3r_bytes *b, const void *data, size_t len);
int h3r_bytes_byte(h3r_bytes *b, uint8_t c);
void h3r_bytes_free(h3r_bytes *b);

/* Appends v as a QUIC variable-length integer (RFC 9000 §16). v must be
 * below 2^62. Returns 0 or -1. */
int h3r_put_varint(h3r_bytes *b, uint64_t v);

/*
 * Reads a QUIC variable-length integer from p[0..len). Returns the number of
 * bytes it took, or 0 when len is too short for it.
 */
size_t h3r_get_varint(const uint8_t *p, size_t len, uint64_t *v);

/* Appends an HTTP/3 frame: type, payload length, payload. Returns 0 or -1. */
int h3r_put_frame(h3r_bytes *b, uint64_t type, const uint8_t *payload,
                  size_t len);

/*
 * QPACK field lines (RFC 9204 §4.5), appended to a field section that starts
 * with h3r_qpack_prefix. Names and values go out as they are: no case
 * folding, no validation, no Huffman coding.
 */
int h3r_qpack_prefix(h3r_bytes *b); /* Required Insert Count 0, Base 0 */
int h3r_qpack_literal(h3r_bytes *b, const uint8_t *name, size_t namelen,
                      const uint8_t *value, size_t valuelen);
int h3r_qpack_static(h3r_bytes *b, uint64_t index);
int h3r_qpack_static_name(h3r_bytes *b, uint64_t index, const uint8_t *value,
                          size_t valuelen);

/* The number of entries in the QPACK static table (RFC 9204 Appendix A). */
#define H3R_QPACK_STATIC_SIZE 99

/* One decoded field. */
typedef struct h3r_field {
  h3r_bytes name;
  h3r_bytes value;
} h3r_field;

typedef struct h3r_fields {
  h3r_field *v;
  size_t n;
  size_t cap;
} h3r_fields;

void h3r_fields_free(h3r_fields *f);

/*
 * Decodes one field section sent by a peer that may not use the dynamic
 * table (we advertise a capacity of 0). Appends the fields to out. Returns
 * 0, or -1 with a static reason in *why (truncated input, a dynamic table
 * reference, a bad Huffman string, no memory).
 */
int h3r_qpack_decode(const uint8_t *p, size_t len, h3r_fields *out,
                     const char **why);

/*
 * Decodes a Huffman string (RFC 7541 Appendix B) and appends it to out.
 * Returns 0, or -1 for EOS in the string, padding longer than 7 bits or not
 * all ones, or no memory.
 */
int h3r_huffman_decode(const uint8_t *p, size_t len, h3r_bytes *out);

#endif /* H3RAW_H */
