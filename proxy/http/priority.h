/*
 * RFC 9218 priority parameters: the Priority field value (a Structured
 * Field Dictionary, RFC 8941 §3.2), as requests carry it, PRIORITY_UPDATE
 * frames repeat it, and origins answer it.
 *
 * Leaf module: no I/O, no library. (nghttp3 parses the field for its own
 * scheduler, but the bridge and the HTTP/2 front end need the same answer
 * without including nghttp3, and nghttp2 1.52 exports no parser.)
 */
#ifndef H3G_PRIORITY_H
#define H3G_PRIORITY_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "http_headers.h"

typedef struct h3g_priority {
  uint8_t urgency;     /* 0 (most urgent) .. 7 */
  uint8_t incremental; /* 0 or 1 */
} h3g_priority;

/* RFC 9218 §4: what a request that says nothing gets. */
#define H3G_PRIORITY_DEFAULT ((h3g_priority){.urgency = 3, .incremental = 0})

/* Which parameters h3g_priority_parse() found. */
enum {
  H3G_PRIORITY_HAS_U = 1,
  H3G_PRIORITY_HAS_I = 2,
};

/*
 * Parses one Priority field value and assigns to *p only the parameters it
 * carries with a valid value: `u` an Integer 0..7, `i` a Boolean. Others
 * (unknown keys, a `u` out of range or of another type) are ignored, as
 * RFC 9218 §4 requires; for a repeated key the last one counts. Returns a
 * mask of H3G_PRIORITY_HAS_* (0: nothing assigned), or H3G_ERR_PROTO when
 * the value is not a valid Dictionary (then *p is untouched and the whole
 * field must be ignored).
 */
int h3g_priority_parse(h3g_priority *p, const uint8_t *value, size_t len);

/*
 * The priority a request's field section asks for: every `priority` line,
 * in order, as if combined into one value (RFC 9110 §5.3), over the
 * defaults. A malformed value makes the whole field count as absent.
 */
h3g_priority h3g_priority_of_request(const h3g_headers *fields);

/*
 * Merges an origin's Priority response field (RFC 9218 §8: a parameter the
 * response carries replaces the client's; one it leaves out keeps the
 * client's) into *p. Returns 1 when the response carried at least one
 * valid parameter (the front end should apply the result), else 0.
 */
int h3g_priority_merge_response(h3g_priority *p, const h3g_field *fields,
                                size_t n);

#endif /* H3G_PRIORITY_H */
