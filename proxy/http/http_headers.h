/*
 * HTTP field storage and the header rules shared by every front end:
 * which fields are hop-by-hop or connection-specific, how an HTTP/3 (or
 * HTTP/2) request's field section is validated (RFC 9114 §4.1.2, §4.2, §4.3;
 * RFC 9110 §5), and how an HTTP/1.1 response's fields are filtered before
 * they are sent on (RFC 9110 §7.6.1).
 *
 * A leaf module: depends only on common.h.
 */
#ifndef H3G_HTTP_HEADERS_H
#define H3G_HTTP_HEADERS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* One field. Name and value are not NUL-terminated. */
typedef struct h3g_field {
  const uint8_t *name;
  size_t namelen;
  const uint8_t *value;
  size_t valuelen;
} h3g_field;

/*
 * An ordered list of fields whose bytes live in one arena with a hard cap
 * (the maximum field-section size: the sum over fields of name + value + 32,
 * as RFC 9114 §4.2.2 counts it). Adding past the cap fails with
 * H3G_ERR_TOOBIG; nothing is truncated.
 *
 * The arena and the field array grow on demand, never beyond what the cap
 * allows, so a small request costs little. Growing moves them: the entries
 * of fields[] are kept up to date, but any pointer taken from the list (a
 * field's name or value, a copy of an h3g_field, &fields[i]) is valid only
 * until the next add, append, clear or free.
 */
typedef struct h3g_headers {
  uint8_t *arena;
  size_t arena_used;
  size_t arena_cap;
  h3g_field *fields;
  size_t nfields;
  size_t fields_cap;
  size_t section_size; /* RFC 9114 §4.2.2 size of what was added */
  size_t max_section_size;
} h3g_headers;

/*
 * Prepares an empty list that accepts at most max_section_size bytes (counted
 * as above). Allocates lazily on first add. Returns 0.
 */
int h3g_headers_init(h3g_headers *h, size_t max_section_size);

/* Releases memory. Safe on a zeroed or already freed list. */
void h3g_headers_free(h3g_headers *h);

/* Forgets every field but keeps the memory for reuse. */
void h3g_headers_clear(h3g_headers *h);

/*
 * Appends a copy of (name, value). Does no validation.
 * Returns 0, H3G_ERR_TOOBIG (cap exceeded) or H3G_ERR_NOMEM.
 */
int h3g_headers_add(h3g_headers *h, const uint8_t *name, size_t namelen,
                    const uint8_t *value, size_t valuelen);

/*
 * Appends bytes to the value of the last field (HTTP/1.1 parsers deliver a
 * value in pieces), or to its name when to_name is set. Returns as
 * h3g_headers_add, or H3G_ERR_INVAL when the list is empty.
 */
int h3g_headers_append_last(h3g_headers *h, int to_name, const uint8_t *data,
                            size_t len);

/*
 * Removes trailing SP and HTAB from the last field's value (an HTTP/1.1
 * parser hands them over; RFC 9110 §5.5 excludes them from the value) and
 * gives their room back. No-op on an empty list.
 */
void h3g_headers_trim_last(h3g_headers *h);

/* Returns the first field named name (ASCII case-insensitive), or NULL. */
const h3g_field *h3g_headers_find(const h3g_headers *h, const char *name);

/* Flags of well-known field names (the table is in http_headers.c). */
enum {
  /* Removed when forwarding (RFC 9110 §7.6.1): connection, keep-alive,
   * proxy-connection, te, transfer-encoding, upgrade. */
  H3G_FIELD_HOP_BY_HOP = 1u << 0,
  /* Malformed in HTTP/3 messages (RFC 9114 §4.2): as above but te, which
   * is allowed with the value "trailers". */
  H3G_FIELD_CONN_SPECIFIC = 1u << 1,
  /* forwarded, via, x-forwarded-for/-host/-port/-proto, x-real-ip. */
  H3G_FIELD_FORWARDING = 1u << 2,
  /* Framing and routing: host, content-length, transfer-encoding. The
   * HTTP/1.1 writer emits them itself, and they are refused in trailers. */
  H3G_FIELD_FRAMING = 1u << 3,
  /* cookie: split into crumbs in HTTP/3, joined with "; " into one field
   * for HTTP/1.1 (RFC 9114 §4.2.1). */
  H3G_FIELD_COOKIE = 1u << 4,
};

/* Returns the H3G_FIELD_* flags of a field name (ASCII case-insensitive),
 * 0 if it is not a well-known name. */
unsigned h3g_field_flags(const uint8_t *name, size_t namelen);

/* The pseudo-header fields of a request, pointing into an h3g_headers arena. */
typedef struct h3g_request_pseudo {
  h3g_field method;
  h3g_field scheme;
  h3g_field authority; /* namelen 0 when absent */
  h3g_field path;
  h3g_field protocol; /* :protocol (extended CONNECT), namelen 0 if absent */
} h3g_request_pseudo;

/*
 * Validates a complete HTTP/3 (or HTTP/2) request field section, in received
 * order, and extracts its pseudo-header fields. Refuses (H3G_ERR_PROTO, with
 * a static reason in *why): uppercase or empty names; names that are not
 * tokens or values with characters outside RFC 9110 §5.5 (CR, LF, NUL, other
 * controls, DEL); values with leading or trailing whitespace; unknown,
 * repeated or missing pseudo-header fields (:method, :scheme and :path are
 * required); pseudo-header fields after a regular field; a :method that is
 * not a token; CONNECT without :protocol (this gateway does not open TCP
 * tunnels), :protocol without CONNECT, an empty or non-token :protocol,
 * extended CONNECT (RFC 8441 §4, RFC 9220 §3) without :authority; a :scheme other
 * than http or https; an empty :path, or one that is neither "*" (OPTIONS
 * only) nor starts with "/", or holds a character outside VCHAR or a "#";
 * an :authority or host that is empty, holds userinfo ("@") or characters
 * outside those of RFC 3986 authority; neither :authority nor host; a
 * repeated host; a host that differs from :authority (ASCII
 * case-insensitive); connection-specific fields (connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade); te other than "trailers";
 * a content-length that is not a decimal number fitting int64_t, or several
 * content-length values (in one list or in several fields) that differ.
 *
 * On success, *out holds the pseudo-header fields (pointing into h;
 * authority has namelen 0 when only host was sent, protocol namelen 0
 * unless the request is an extended CONNECT) and *content_length is the declared length or -1 when absent.
 */
int h3g_request_validate(const h3g_headers *h, h3g_request_pseudo *out,
                         int64_t *content_length, const char **why);

/*
 * Validates a request trailer section: no pseudo-header fields, same name and
 * value rules as above, and none of the fields that must not be trailers
 * when forwarded to HTTP/1.1 (H3G_FIELD_HOP_BY_HOP, H3G_FIELD_FRAMING: a
 * legacy upstream may merge trailers into the header section, RFC 9110
 * §6.5.1). Returns 0 or H3G_ERR_PROTO with *why set.
 */
int h3g_trailers_validate(const h3g_headers *h, const char **why);

/*
 * Checks one field of a request's header section (trailer 0) or trailer
 * section (trailer 1) by those rules of h3g_request_validate (resp.
 * h3g_trailers_validate) that need no other field: the name, the value, the
 * pseudo-header field's name, connection-specific fields, te, the
 * characters of :authority and host, and content-length. *content_length
 * is -1 or the length the section's earlier content-length fields declared
 * (header sections only); a content-length field sets it, or is refused
 * when it differs. A section whose every field passes may still be refused
 * by the whole-section functions (pseudo-header fields missing, repeated or
 * after a regular field, host against :authority, :method, :scheme, :path).
 * Returns 0 or H3G_ERR_PROTO with a static reason in *why.
 */
int h3g_request_field_check(const uint8_t *name, size_t namelen,
                            const uint8_t *value, size_t valuelen, int trailer,
                            int64_t *content_length, const char **why);

/*
 * Filters an HTTP/1.1 response (or trailer) field list for forwarding: drops
 * hop-by-hop fields and every field named in a Connection field (a
 * comma-separated list of tokens, ASCII case-insensitive), lowercases names
 * in place, keeps order and duplicates. Writes the kept fields to out
 * (capacity outcap; pointing into h) and their number to *nout. Returns 0,
 * or H3G_ERR_TOOBIG when outcap is too small or the Connection fields name
 * more than H3G_MAX_CONNECTION_OPTIONS distinct fields that are not already
 * hop-by-hop.
 */
#define H3G_MAX_CONNECTION_OPTIONS 32
int h3g_response_filter(h3g_headers *h, h3g_field *out, size_t outcap,
                        size_t *nout);

/* ASCII case-insensitive comparison of a field name with a C string. */
int h3g_field_name_eq(const h3g_field *f, const char *name);

/*
 * 1 when a field called name (any case, any number of them) lists token
 * among its comma-separated elements (RFC 9110 §5.6.1), compared
 * case-insensitively: "Connection: keep-alive, Upgrade" lists "upgrade".
 */
int h3g_headers_list_has(const h3g_headers *h, const char *name,
                         const char *token);
/* The same for a token of tl bytes (another field's name, say). */
int h3g_headers_list_has_n(const h3g_headers *h, const char *name,
                           const uint8_t *token, size_t tl);

#endif /* H3G_HTTP_HEADERS_H */
