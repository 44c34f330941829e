/*
 * HTTP/2 session: nghttp2 callbacks on one side, h3g_frontend_ops for one
 * bridge per stream on the other, the connection's transport ops below.
 *
 * Streams: OPEN (bridge made in on_begin_headers) -> CLOSED (nghttp2's
 * on_stream_close: moved to the reap list) -> freed from process(), never
 * from inside an nghttp2 or bridge callback. `cut` marks a stream the
 * bridge must not hear from again but h3g_bridge_free.
 *
 * Flow control mirrors QUIC's: nghttp2's automatic WINDOW_UPDATE is off;
 * the initial stream window is stream_buffer_size (the bridge's ring), and
 * credit goes back (nghttp2_session_consume) only for bytes the bridge
 * reports the upstream took. Bytes nobody takes (cut or stopped streams)
 * are credited at once so the connection window never leaks.
 *
 * Output: frames are copied into a stage and written to the transport in
 * record-sized pieces, only while the transport's output has room
 * (send callbacks say WOULDBLOCK otherwise; nghttp2 retries them). DATA
 * goes NO_COPY: the read callback takes vectors from the bridge, the
 * send_data callback copies frame header and payload into the stage,
 * flushes it to the transport, and only then releases the bytes
 * (h3g_bridge_body_done).
 *
 * Rapid reset (CVE-2023-44487): more than RST_MAX client RST_STREAMs in one
 * second ends the connection with GOAWAY(ENHANCE_YOUR_CALM).
 */
#include "h2_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

#include "frontend.h"
#include "log.h"
#include "metrics.h"

/* Plaintext staged per transport write: two TLS records. */
#define STAGE_CAP 32768
/* Client RST_STREAM frames tolerated per second. */
#define RST_MAX 100

typedef struct h2_stream {
  h3g_h2_session *s;
  int32_t id;
  h3g_bridge *bridge;  /* NULL if it could not be created */
  uint64_t unconsumed; /* body bytes the bridge holds, not yet credited */
  h3g_iovec v[2];      /* DATA handed out by on_read, not yet written */
  size_t nv, vtotal;
  int32_t window;            /* our window for its request body */
  unsigned cut : 1;          /* no bridge calls but h3g_bridge_free */
  unsigned headers_done : 1; /* end_headers was delivered */
  unsigned req_done : 1;     /* END_STREAM received */
  unsigned resp_done : 1;    /* END_STREAM sent */
  unsigned head_sent : 1;    /* a final head was submitted */
  unsigned stop_req : 1;     /* the request body is no longer wanted */
  unsigned deferred : 1;     /* on_read said DEFERRED */
  struct h2_stream *prev, *next;
} h2_stream;

struct h3g_h2_session {
  const h3g_h1_env *env;
  const h3g_h1_transport_ops *tops;
  void *t;
  char client[64];
  nghttp2_session *ng;
  h2_stream *streams; /* open */
  h2_stream *reap;    /* closed by nghttp2, freed in process() */
  size_t nstreams;
  uint64_t written, timer_written;
  uint64_t rst_window_ms;
  unsigned rst_count;
  int closed;   /* close() was called */
  int draining; /* GOAWAY for shutdown sent */
  int connect_offered; /* our SETTINGS enabled extended CONNECT */
  int dying;    /* being freed */
  int write_err;
  uint32_t tunnels; /* WebSocket tunnels open (the bridges count them) */
  size_t staged;
  uint8_t stage[STAGE_CAP];
};

static const h3g_frontend_ops frontend_ops;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- output ---- */

static void stage_flush(h3g_h2_session *s) {
  if (s->staged == 0)
    return;
  if (s->write_err == 0)
    s->write_err = s->tops->write(s->t, s->stage, s->staged);
  s->staged = 0;
}

static void stage_put(h3g_h2_session *s, const uint8_t *p, size_t n) {
  s->written += n;
  while (n > 0) {
    if (s->staged == STAGE_CAP)
      stage_flush(s);
    size_t k = H3G_MIN(n, STAGE_CAP - s->staged);
    memcpy(s->stage + s->staged, p, k);
    s->staged += k;
    p += k;
    n -= k;
  }
}

/* What the transport takes now, the staged bytes counted. */
static size_t out_room(const h3g_h2_session *s) {
  size_t r = s->tops->room(s->t);
  return r > s->staged ? r - s->staged : 0;
}

static void session_close(h3g_h2_session *s, int graceful) {
  if (s->closed)
    return;
  s->closed = 1;
  s->tops->set_timer(s->t, 0);
  s->tops->close(s->t, graceful);
}

/* ---- streams ---- */

static void stream_rst(h2_stream *st, uint32_t code) {
  h3g_h2_session *s = st->s;
  st->cut = 1;
  nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, code);
  s->tops->kick(s->t);
}

static void stream_internal_error(h2_stream *st) {
  H3G_INC(h2_streams_reset_by_gateway);
  stream_rst(st, NGHTTP2_INTERNAL_ERROR);
}

/* The bridge found the request malformed (RFC 9113 §8.1.1: a stream error
 * of type PROTOCOL_ERROR). */
static void stream_malformed(h2_stream *st, int reject) {
  h3g_debug("h2 %s: stream %d: malformed request", st->s->client, st->id);
  H3G_INC(h2_malformed_requests);
  if (reject && st->bridge != NULL && !st->cut)
    h3g_bridge_reject(st->bridge);
  stream_rst(st, NGHTTP2_PROTOCOL_ERROR);
}

static void stream_end_request(h2_stream *st) {
  st->req_done = 1;
  if (st->cut || st->bridge == NULL)
    return;
  int rv = h3g_bridge_end_request(st->bridge);
  if (rv == H3G_ERR_PROTO)
    stream_malformed(st, 0);
  else if (rv != 0)
    stream_internal_error(st);
}

static void stream_free(h2_stream *st) {
  h3g_bridge_free(st->bridge);
  free(st);
  H3G_DEC(h2_streams_active);
}

/* Frees the streams nghttp2 closed. Bytes their bridges held uncredited
 * go back to the connection window. */
static void reap_streams(h3g_h2_session *s) {
  while (s->reap != NULL) {
    h2_stream *st = s->reap;
    s->reap = st->next;
    if (st->unconsumed > 0 && !s->dying)
      nghttp2_session_consume_connection(s->ng, (size_t)st->unconsumed);
    stream_free(st);
  }
}

static h2_stream *stream_of(h3g_h2_session *s, int32_t id) {
  return nghttp2_session_get_stream_user_data(s->ng, id);
}

/* ---- nghttp2 callbacks ---- */

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t len,
                       int flags, void *user_data) {
  h3g_h2_session *s = user_data;
  H3G_UNUSED(ng);
  H3G_UNUSED(flags);
  if (s->write_err != 0 || s->closed)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  if (out_room(s) == 0)
    return NGHTTP2_ERR_WOULDBLOCK;
  stage_put(s, data, len);
  return (ssize_t)len;
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *frame,
                        const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data) {
  h3g_h2_session *s = user_data;
  h2_stream *st = source->ptr;
  H3G_UNUSED(ng);
  if (s->write_err != 0 || s->closed)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  if (out_room(s) == 0)
    return NGHTTP2_ERR_WOULDBLOCK;
  stage_put(s, framehd, 9);
  if (frame->data.padlen > 0) {
    uint8_t pad = (uint8_t)(frame->data.padlen - 1);
    stage_put(s, &pad, 1);
  }
  for (size_t i = 0; i < st->nv; i++)
    stage_put(s, st->v[i].base, st->v[i].len);
  if (frame->data.padlen > 1) {
    static const uint8_t zeros[256];
    stage_put(s, zeros, frame->data.padlen - 1);
  }
  stage_flush(s);
  if (s->write_err != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  size_t done = st->vtotal;
  st->nv = st->vtotal = 0;
  H3G_UNUSED(length);
  /* In the transport's output now: the bridge may reuse the bytes. */
  if (!st->cut && st->bridge != NULL && done > 0)
    h3g_bridge_body_done(st->bridge, done);
  return 0;
}

static ssize_t on_read(nghttp2_session *ng, int32_t stream_id, uint8_t *buf,
                       size_t length, uint32_t *data_flags,
                       nghttp2_data_source *source, void *user_data) {
  h2_stream *st = source->ptr;
  H3G_UNUSED(ng);
  H3G_UNUSED(buf);
  H3G_UNUSED(user_data);
  if (st->cut || st->bridge == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  unsigned flags = 0;
  size_t n = h3g_bridge_take_body(st->bridge, st->v, 2, length, &flags);
  if (n == 0 && flags == 0) {
    st->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += st->v[i].len;
  st->nv = n;
  st->vtotal = total;
  if (total > 0)
    *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (flags & H3G_BODY_END) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    const h3g_field *tf = NULL;
    size_t nt = 0;
    if (flags & H3G_BODY_TRAILERS)
      h3g_bridge_get_trailers(st->bridge, &tf, &nt);
    if (nt > 0) {
      nghttp2_nv *nv = calloc(nt, sizeof(*nv));
      if (nv != NULL) {
        for (size_t i = 0; i < nt; i++)
          nv[i] = (nghttp2_nv){(uint8_t *)(uintptr_t)tf[i].name,
                               (uint8_t *)(uintptr_t)tf[i].value, tf[i].namelen,
                               tf[i].valuelen, NGHTTP2_NV_FLAG_NONE};
        if (nghttp2_submit_trailer(st->s->ng, stream_id, nv, nt) == 0)
          *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        free(nv);
      }
    }
  }
  return (ssize_t)total;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame,
                            void *user_data) {
  h3g_h2_session *s = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  h2_stream *st = calloc(1, sizeof(*st));
  if (st == NULL) {
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                              NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  H3G_INC(h2_streams_active);
  st->s = s;
  st->id = frame->hd.stream_id;
  st->window = (int32_t)s->env->cfg->stream_buffer_size; /* our SETTINGS */
  st->next = s->streams;
  if (s->streams != NULL)
    s->streams->prev = st;
  s->streams = st;
  if (s->nstreams++ == 0)
    s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
  nghttp2_session_set_stream_user_data(ng, st->id, st);
  H3G_INC(h2_streams_opened);
  if (h3g_bridge_new(&st->bridge, s->env->bridge_env, &frontend_ops, st, s,
                     s->client, "h2") != 0) {
    st->bridge = NULL;
    H3G_INC(h2_streams_reset_by_gateway);
    stream_rst(st, NGHTTP2_REFUSED_STREAM);
  } else if (s->connect_offered) {
    h3g_bridge_connect_offered(st->bridge);
  }
  return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data) {
  h3g_h2_session *s = user_data;
  H3G_UNUSED(ng);
  H3G_UNUSED(flags);
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  h2_stream *st = stream_of(s, frame->hd.stream_id);
  if (st == NULL || st->cut || st->bridge == NULL)
    return 0;
  int rv;
  if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    /* H3G_ERR_TOOBIG: the bridge answers 431 from end_headers. */
    rv = h3g_bridge_add_field(st->bridge, name, namelen, value, valuelen);
    if (rv == H3G_ERR_NOMEM)
      stream_internal_error(st);
  } else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
    rv = h3g_bridge_add_trailer(st->bridge, name, namelen, value, valuelen);
    if (rv == H3G_ERR_PROTO)
      stream_malformed(st, 0);
    else if (rv == H3G_ERR_NOMEM)
      stream_internal_error(st);
  }
  return 0;
}

static void count_client_reset(h3g_h2_session *s) {
  uint64_t now = now_ms();
  if (now - s->rst_window_ms >= 1000) {
    s->rst_window_ms = now;
    s->rst_count = 0;
  }
  if (++s->rst_count == RST_MAX + 1) {
    h3g_warn("h2 %s: over %d stream resets a second: GOAWAY", s->client,
             RST_MAX);
    H3G_INC(h2_rapid_reset_goaways);
    nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame,
                         void *user_data) {
  h3g_h2_session *s = user_data;
  H3G_UNUSED(ng);
  h2_stream *st = NULL;
  if (frame->hd.stream_id != 0)
    st = stream_of(s, frame->hd.stream_id);
  int end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    if (st == NULL)
      break;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST && !st->cut &&
        st->bridge != NULL) {
      st->headers_done = 1;
      int rv = h3g_bridge_end_headers(st->bridge, end_stream);
      if (rv == H3G_ERR_PROTO) {
        stream_malformed(st, 0);
        break;
      }
      if (rv != 0) {
        stream_internal_error(st);
        break;
      }
    }
    if (end_stream)
      stream_end_request(st);
    break;
  case NGHTTP2_DATA:
    if (st != NULL && end_stream)
      stream_end_request(st);
    break;
  case NGHTTP2_PRIORITY_UPDATE: {
    /* RFC 9218 §7.1; nghttp2 has already applied it to its scheduler (and
     * refused one for stream 0 or beyond the stream limit). The update
     * replaces the whole priority: what it leaves out is the default. */
    const nghttp2_ext_priority_update *pu = frame->ext.payload;
    if (pu->stream_id == 0) {
      /* A MUST of RFC 9218 §7.1 that nghttp2 1.52 lets pass. */
      h3g_debug("h2 %s: PRIORITY_UPDATE for stream 0", s->client);
      nghttp2_session_terminate_session(s->ng, NGHTTP2_PROTOCOL_ERROR);
      break;
    }
    h2_stream *target = stream_of(s, pu->stream_id);
    h3g_priority prio = H3G_PRIORITY_DEFAULT;
    if (target != NULL && !target->cut && target->bridge != NULL &&
        target->headers_done &&
        h3g_priority_parse(&prio, pu->field_value, pu->field_value_len) >= 0)
      h3g_bridge_set_priority(target->bridge, prio);
    break;
  }
  case NGHTTP2_RST_STREAM:
    count_client_reset(s);
    if (st != NULL && !st->cut) {
      st->cut = 1;
      H3G_INC(h2_streams_reset_by_client);
      h3g_debug("h2 %s: stream %d reset by the client", s->client, st->id);
      if (st->bridge != NULL)
        h3g_bridge_client_abort(st->bridge);
    }
    break;
  default: break;
  }
  return 0;
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags,
                              int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data) {
  h3g_h2_session *s = user_data;
  H3G_UNUSED(flags);
  h2_stream *st = stream_of(s, stream_id);
  if (st == NULL || st->cut || st->stop_req || st->bridge == NULL) {
    /* Nobody takes these bytes: credit them back at once. */
    nghttp2_session_consume(ng, stream_id, len);
    return 0;
  }
  /* Counted before the call: the bridge may consume() from inside it. */
  st->unconsumed += len;
  int rv = h3g_bridge_recv_body(st->bridge, data, len);
  if (rv == H3G_ERR_PROTO) {
    stream_malformed(st, 0);
  } else if (rv == H3G_ERR_TOOBIG) {
    /* nghttp2 enforces the window we advertised: our bug, not theirs. */
    h3g_warn("h2 %s: stream %d: request body over the bridge's buffer",
             s->client, stream_id);
    stream_internal_error(st);
  } else if (rv != 0) {
    stream_internal_error(st);
  }
  return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame,
                         void *user_data) {
  h3g_h2_session *s = user_data;
  if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
      !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    return 0;
  h2_stream *st = stream_of(s, frame->hd.stream_id);
  if (st == NULL)
    return 0;
  st->resp_done = 1;
  /* The response is out; a body nobody wants is stopped now, with no
   * error (RFC 9113 §8.1). */
  if (st->stop_req && !st->req_done)
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id,
                           uint32_t error_code, void *user_data) {
  h3g_h2_session *s = user_data;
  if (s->dying)
    return 0;
  h2_stream *st = stream_of(s, stream_id);
  if (st == NULL)
    return 0;
  nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
  if (!st->cut && st->bridge != NULL && !(st->req_done && st->resp_done)) {
    st->cut = 1;
    if (!st->headers_done || error_code == NGHTTP2_PROTOCOL_ERROR) {
      /* nghttp2 refused the request itself (RFC 9113 §8.1.1). */
      H3G_INC(h2_malformed_requests);
      h3g_bridge_reject(st->bridge);
    } else {
      h3g_bridge_client_abort(st->bridge);
    }
  }
  st->cut = 1;
  if (st->prev != NULL)
    st->prev->next = st->next;
  else
    s->streams = st->next;
  if (st->next != NULL)
    st->next->prev = st->prev;
  st->prev = NULL;
  st->next = s->reap;
  s->reap = st;
  if (--s->nstreams == 0)
    s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
  s->tops->kick(s->t);
  return 0;
}

/* ---- h3g_frontend_ops ---- */

static int fe_usable(const h2_stream *st) {
  return !st->cut && !st->s->dying && !st->s->closed;
}

static int fe_send_head(void *fs, int status, const h3g_field *fields, size_t n,
                        int interim, int has_body) {
  h2_stream *st = fs;
  h3g_h2_session *s = st->s;
  if (!fe_usable(st) || st->head_sent)
    return H3G_ERR_CLOSED;
  if (status < 100 || status > 999 || (interim && status >= 200) ||
      status == 101)
    return H3G_ERR_INVAL;

  const h3g_alt_svc *a =
      st->bridge != NULL && !h3g_bridge_alt_svc(st->bridge) ? NULL
                                                            : s->env->alt_svc;
  int replace = a != NULL && h3g_alt_svc_replaces_upstream(a);
  int upstream_has = 0;
  nghttp2_nv *nv = calloc(n + 2, sizeof(*nv));
  if (nv == NULL)
    return H3G_ERR_NOMEM;
  char code[4];
  char alt[320];
  snprintf(code, sizeof(code), "%03d", status);
  size_t k = 0;
  nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, 3,
                         NGHTTP2_NV_FLAG_NONE};
  for (size_t i = 0; i < n; i++) {
    const h3g_field *f = &fields[i];
    int is_alt = f->namelen == 7 && memcmp(f->name, "alt-svc", 7) == 0;
    if (is_alt) {
      upstream_has = 1;
      if (replace)
        continue;
    }
    nv[k++] = (nghttp2_nv){(uint8_t *)(uintptr_t)f->name,
                           (uint8_t *)(uintptr_t)f->value, f->namelen,
                           f->valuelen, NGHTTP2_NV_FLAG_NONE};
  }
  if (!interim && a != NULL && !(upstream_has && !replace)) {
    size_t al = h3g_alt_svc_value(a, alt, sizeof(alt));
    if (al > 0)
      nv[k++] = (nghttp2_nv){(uint8_t *)"alt-svc", (uint8_t *)alt, 7, al,
                             NGHTTP2_NV_FLAG_NONE};
  }
  int rv;
  if (interim) {
    rv = nghttp2_submit_headers(s->ng, NGHTTP2_FLAG_NONE, st->id, NULL, nv, k,
                                NULL);
  } else {
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read};
    rv = nghttp2_submit_response(s->ng, st->id, nv, k, has_body ? &prd : NULL);
    if (rv == 0)
      st->head_sent = 1;
  }
  free(nv);
  if (rv != 0) {
    h3g_debug("h2 %s: stream %d: cannot submit head: %s", s->client, st->id,
              nghttp2_strerror(rv));
    return rv == NGHTTP2_ERR_NOMEM ? H3G_ERR_NOMEM : H3G_ERR_CLOSED;
  }
  s->tops->kick(s->t);
  return 0;
}

static void fe_body_ready(void *fs) {
  h2_stream *st = fs;
  if (!fe_usable(st))
    return;
  if (st->deferred) {
    st->deferred = 0;
    nghttp2_session_resume_data(st->s->ng, st->id);
  }
  st->s->tops->kick(st->s->t);
}

static void fe_consume(void *fs, size_t n) {
  h2_stream *st = fs;
  if (st->s->dying)
    return;
  n = (size_t)H3G_MIN((uint64_t)n, st->unconsumed);
  if (n == 0)
    return;
  st->unconsumed -= n;
  nghttp2_session_consume(st->s->ng, st->id, n);
  st->s->tops->kick(st->s->t);
}

static uint64_t fe_rtt_ns(void *fs) {
  h2_stream *st = fs;
  return st->s->tops->rtt_ns != NULL ? st->s->tops->rtt_ns(st->s->t) : 0;
}

/* A larger window: nghttp2 sends a WINDOW_UPDATE for the difference
 * (unlike nghttp2_submit_window_update, without touching the manual
 * accounting of consumed bytes). */
static void fe_grow_window(void *fs, size_t n) {
  h2_stream *st = fs;
  if (st->s->dying || st->cut || n > (size_t)(INT32_MAX - st->window))
    return;
  if (nghttp2_session_set_local_window_size(st->s->ng, NGHTTP2_FLAG_NONE,
                                            st->id, st->window + (int32_t)n) ==
      0) {
    st->window += (int32_t)n;
    st->s->tops->kick(st->s->t);
  }
}

static void fe_stop_request(void *fs) {
  h2_stream *st = fs;
  h3g_h2_session *s = st->s;
  if (!fe_usable(st) || st->req_done || st->stop_req)
    return;
  st->stop_req = 1;
  /* What the bridge held is dropped: credit it back. */
  if (st->unconsumed > 0) {
    nghttp2_session_consume(s->ng, st->id, (size_t)st->unconsumed);
    st->unconsumed = 0;
  }
  if (st->resp_done)
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_NO_ERROR);
  s->tops->kick(s->t);
}

static void fe_abort(void *fs, h3g_abort_code code) {
  h2_stream *st = fs;
  if (!fe_usable(st))
    return;
  uint32_t h2code;
  switch (code) {
  case H3G_ABORT_MESSAGE:
  case H3G_ABORT_INCOMPLETE: h2code = NGHTTP2_PROTOCOL_ERROR; break;
  case H3G_ABORT_CANCELLED: h2code = NGHTTP2_CANCEL; break;
  case H3G_ABORT_REJECTED: h2code = NGHTTP2_REFUSED_STREAM; break;
  case H3G_ABORT_CONNECT: h2code = NGHTTP2_CONNECT_ERROR; break;
  case H3G_ABORT_INTERNAL:
  default: h2code = NGHTTP2_INTERNAL_ERROR; break;
  }
  h3g_debug("h2 %s: stream %d aborted (%d)", st->s->client, st->id, (int)code);
  H3G_INC(h2_streams_reset_by_gateway);
  stream_rst(st, h2code);
}

/* The origin's Priority response field (RFC 9218 §8): from now on it
 * decides; the client's later PRIORITY_UPDATEs are ignored. */
static void fe_set_priority(void *fs, h3g_priority prio) {
  h2_stream *st = fs;
  if (!fe_usable(st))
    return;
  nghttp2_extpri pri = {.urgency = prio.urgency, .inc = prio.incremental};
  (void)nghttp2_session_change_extpri_stream_priority(st->s->ng, st->id, &pri,
                                                      1);
}

static uint32_t *fe_tunnels(void *fs) {
  h2_stream *st = fs;
  return &st->s->tunnels;
}

static const h3g_frontend_ops frontend_ops = {
    .send_head = fe_send_head,
    .body_ready = fe_body_ready,
    .consume = fe_consume,
    .stop_request = fe_stop_request,
    .abort = fe_abort,
    .rtt_ns = fe_rtt_ns,
    .grow_window = fe_grow_window,
    .set_priority = fe_set_priority,
    .tunnels = fe_tunnels,
};

/* ---- session ---- */

int h3g_h2_session_new(h3g_h2_session **ps, const h3g_h1_env *env,
                       const h3g_h1_transport_ops *tops, void *t,
                       const char *client) {
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_option *opt = NULL;
  *ps = NULL;
  h3g_h2_session *s = malloc(sizeof(*s));
  if (s == NULL)
    return H3G_ERR_NOMEM;
  *s = (h3g_h2_session){.env = env, .tops = tops, .t = t};
  snprintf(s->client, sizeof(s->client), "%s", client);
  s->rst_window_ms = now_ms();

  if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
    goto fail;
  nghttp2_session_callbacks_set_send_callback(cbs, on_send);
  nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  /* RFC 9218 on HTTP/2 (SETTINGS_NO_RFC7540_PRIORITIES below): nghttp2
   * schedules by the priority field and PRIORITY_UPDATE, which it only
   * reads when asked to. */
  nghttp2_option_set_builtin_recv_extension_type(opt, NGHTTP2_PRIORITY_UPDATE);
  if (nghttp2_session_server_new2(&s->ng, cbs, s, opt) != 0)
    goto fail;
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);
  cbs = NULL;
  opt = NULL;

  const h3g_config *cfg = env->cfg;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->stream_buffer_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_size},
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
      /* RFC 8441: extended CONNECT, for WebSockets (last: left out when
       * no route takes them). */
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
  };
  size_t niv = sizeof(iv) / sizeof(iv[0]) - (cfg->websocket_any ? 0 : 1);
  s->connect_offered = cfg->websocket_any;
  /* [listener] connection_window's bound (1GiB) fits HTTP/2's 2^31-1. */
  uint64_t win = cfg->connection_window;
  if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
      nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
                                            (int32_t)win) != 0) {
    nghttp2_session_del(s->ng);
    goto fail;
  }
  tops->set_timer(t, cfg->tcp_idle_timeout_ms);
  tops->kick(t);
  *ps = s;
  return 0;
fail:
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);
  free(s);
  return H3G_ERR_NOMEM;
}

/* Every open stream's exchange is cut (client_abort unless complete). */
static void cut_all(h3g_h2_session *s, const char *outcome) {
  for (h2_stream *st = s->streams; st != NULL; st = st->next) {
    if (st->cut || st->bridge == NULL)
      continue;
    st->cut = 1;
    if (!(st->req_done && st->resp_done)) {
      h3g_bridge_client_abort(st->bridge);
      if (outcome != NULL)
        h3g_bridge_set_outcome(st->bridge, outcome);
    }
  }
}

void h3g_h2_session_expire(h3g_h2_session *s) {
  cut_all(s, "shutdown");
}

void h3g_h2_session_free(h3g_h2_session *s) {
  if (s == NULL)
    return;
  s->dying = 1;
  cut_all(s, NULL);
  while (s->streams != NULL) {
    h2_stream *st = s->streams;
    s->streams = st->next;
    stream_free(st);
  }
  reap_streams(s);
  nghttp2_session_del(s->ng);
  free(s);
}

size_t h3g_h2_session_recv(h3g_h2_session *s, const uint8_t *data, size_t len) {
  if (s->closed)
    return len;
  ssize_t rv = nghttp2_session_mem_recv(s->ng, data, len);
  if (rv < 0) {
    h3g_debug("h2 %s: %s", s->client, nghttp2_strerror((int)rv));
    if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
      session_close(s, 0);
      return len;
    }
    /* nghttp2 queued a GOAWAY: it goes out before the close. */
    nghttp2_session_terminate_session(s->ng, NGHTTP2_PROTOCOL_ERROR);
  }
  s->tops->kick(s->t);
  return len;
}

void h3g_h2_session_eof(h3g_h2_session *s) {
  if (s->closed)
    return;
  cut_all(s, NULL);
  session_close(s, 0);
}

void h3g_h2_session_process(h3g_h2_session *s) {
  reap_streams(s);
  if (s->closed)
    return;
  if (out_room(s) > 0 && nghttp2_session_want_write(s->ng)) {
    int rv = nghttp2_session_send(s->ng);
    stage_flush(s);
    if (rv != 0 || s->write_err != 0) {
      h3g_debug("h2 %s: send: %s", s->client,
                rv != 0 ? nghttp2_strerror(rv) : h3g_strerror(s->write_err));
      cut_all(s, NULL);
      session_close(s, 0);
      return;
    }
  }
  reap_streams(s);
  int want_write = nghttp2_session_want_write(s->ng);
  if (!nghttp2_session_want_read(s->ng) && !want_write) {
    session_close(s, 1);
    return;
  }
  if (s->draining && s->nstreams == 0 && !want_write)
    session_close(s, 1);
}

void h3g_h2_session_on_timer(h3g_h2_session *s) {
  if (s->closed)
    return;
  if (s->nstreams == 0) {
    h3g_debug("h2 %s: idle timeout", s->client);
    nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
    s->tops->kick(s->t);
    s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
    if (s->draining || out_room(s) == 0) {
      session_close(s, 0);
    }
    s->draining = 1;
    return;
  }
  if (out_room(s) == 0 && s->written == s->timer_written) {
    h3g_debug("h2 %s: client stopped reading", s->client);
    H3G_INC(tcp_timeouts);
    cut_all(s, "client timeout");
    session_close(s, 0);
    return;
  }
  s->timer_written = s->written;
  s->tops->set_timer(s->t, s->env->cfg->tcp_idle_timeout_ms);
}

void h3g_h2_session_shutdown(h3g_h2_session *s) {
  if (s->closed || s->draining)
    return;
  s->draining = 1;
  nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(s->ng),
                        NGHTTP2_NO_ERROR, NULL, 0);
  s->tops->kick(s->t);
}
