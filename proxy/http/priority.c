/*
 * RFC 9218 Priority values. The parser follows RFC 8941 §4.2 to the letter
 * for every item type, not only for `u` and `i`: a value with an extension
 * parameter this gateway does not know must still be read correctly, and a
 * malformed one must make the whole field count as absent (RFC 8941 §4.2:
 * parsing fails as a whole).
 */
#include "priority.h"

#include <stdlib.h>
#include <string.h>

typedef struct sf_cursor {
  const uint8_t *p, *end;
} sf_cursor;

/* What an item turned out to be, as far as Priority cares. */
typedef enum sf_kind {
  SF_OTHER = 0, /* string, token, bytes, decimal, inner list */
  SF_INTEGER,
  SF_BOOLEAN,
} sf_kind;

typedef struct sf_value {
  sf_kind kind;
  int64_t integer; /* SF_INTEGER */
  int boolean;     /* SF_BOOLEAN */
} sf_value;

static int at_end(const sf_cursor *c) {
  return c->p == c->end;
}

static int peek(const sf_cursor *c) {
  return c->p < c->end ? *c->p : -1;
}

static int is_lcalpha(int ch) {
  return ch >= 'a' && ch <= 'z';
}

static int is_alpha(int ch) {
  return is_lcalpha(ch) || (ch >= 'A' && ch <= 'Z');
}

static int is_digit(int ch) {
  return ch >= '0' && ch <= '9';
}

/* RFC 9110 tchar. */
static int is_tchar(int ch) {
  return is_alpha(ch) || is_digit(ch) ||
         (ch > 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static void skip_sp(sf_cursor *c) {
  while (peek(c) == ' ')
    c->p++;
}

static void skip_ows(sf_cursor *c) {
  while (peek(c) == ' ' || peek(c) == '\t')
    c->p++;
}

/* key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ) */
static int parse_key(sf_cursor *c, const uint8_t **key, size_t *keylen) {
  int ch = peek(c);
  if (!is_lcalpha(ch) && ch != '*')
    return H3G_ERR_PROTO;
  const uint8_t *start = c->p;
  while ((ch = peek(c)) >= 0 && (is_lcalpha(ch) || is_digit(ch) || ch == '_' ||
                                 ch == '-' || ch == '.' || ch == '*'))
    c->p++;
  *key = start;
  *keylen = (size_t)(c->p - start);
  return 0;
}

static int parse_number(sf_cursor *c, sf_value *v) {
  int neg = 0;
  if (peek(c) == '-') {
    neg = 1;
    c->p++;
  }
  if (!is_digit(peek(c)))
    return H3G_ERR_PROTO;
  int64_t n = 0;
  size_t digits = 0, frac = 0;
  int decimal = 0;
  int ch;
  while ((ch = peek(c)) >= 0) {
    if (is_digit(ch)) {
      if (decimal) {
        if (++frac > 3)
          return H3G_ERR_PROTO;
      } else {
        if (++digits > 15)
          return H3G_ERR_PROTO;
        n = n * 10 + (ch - '0');
      }
      c->p++;
    } else if (ch == '.' && !decimal) {
      if (digits > 12)
        return H3G_ERR_PROTO;
      decimal = 1;
      c->p++;
    } else {
      break;
    }
  }
  if (decimal) {
    if (frac == 0)
      return H3G_ERR_PROTO; /* "1." */
    v->kind = SF_OTHER;
    return 0;
  }
  v->kind = SF_INTEGER;
  v->integer = neg ? -n : n;
  return 0;
}

static int parse_string(sf_cursor *c) {
  c->p++; /* the opening DQUOTE */
  int ch;
  while ((ch = peek(c)) >= 0) {
    c->p++;
    if (ch == '\\') {
      ch = peek(c);
      if (ch != '"' && ch != '\\')
        return H3G_ERR_PROTO;
      c->p++;
    } else if (ch == '"') {
      return 0;
    } else if (ch < 0x20 || ch > 0x7e) {
      return H3G_ERR_PROTO;
    }
  }
  return H3G_ERR_PROTO; /* unterminated */
}

static int parse_bytes(sf_cursor *c) {
  c->p++; /* the opening ":" */
  int ch;
  while ((ch = peek(c)) >= 0) {
    c->p++;
    if (ch == ':')
      return 0;
    if (!is_alpha(ch) && !is_digit(ch) && ch != '+' && ch != '/' && ch != '=')
      return H3G_ERR_PROTO;
  }
  return H3G_ERR_PROTO;
}

static int parse_bare_item(sf_cursor *c, sf_value *v) {
  int ch = peek(c);
  *v = (sf_value){.kind = SF_OTHER};
  if (ch == '-' || is_digit(ch))
    return parse_number(c, v);
  if (ch == '"')
    return parse_string(c);
  if (ch == ':')
    return parse_bytes(c);
  if (ch == '?') {
    c->p++;
    ch = peek(c);
    if (ch != '0' && ch != '1')
      return H3G_ERR_PROTO;
    c->p++;
    v->kind = SF_BOOLEAN;
    v->boolean = ch == '1';
    return 0;
  }
  if (is_alpha(ch) || ch == '*') {
    while ((ch = peek(c)) >= 0 && (is_tchar(ch) || ch == ':' || ch == '/'))
      c->p++;
    return 0;
  }
  return H3G_ERR_PROTO;
}

/* parameters = *( ";" *SP parameter ); their values do not matter here. */
static int parse_parameters(sf_cursor *c) {
  while (peek(c) == ';') {
    c->p++;
    skip_sp(c);
    const uint8_t *key;
    size_t keylen;
    if (parse_key(c, &key, &keylen) != 0)
      return H3G_ERR_PROTO;
    if (peek(c) == '=') {
      c->p++;
      sf_value ignored;
      if (parse_bare_item(c, &ignored) != 0)
        return H3G_ERR_PROTO;
    }
  }
  return 0;
}

static int parse_inner_list(sf_cursor *c) {
  c->p++; /* "(" */
  for (;;) {
    skip_sp(c);
    if (peek(c) == ')') {
      c->p++;
      return parse_parameters(c);
    }
    sf_value ignored;
    if (parse_bare_item(c, &ignored) != 0 || parse_parameters(c) != 0)
      return H3G_ERR_PROTO;
    if (peek(c) != ' ' && peek(c) != ')')
      return H3G_ERR_PROTO;
  }
}

static int parse_member_value(sf_cursor *c, sf_value *v) {
  if (peek(c) == '(') {
    *v = (sf_value){.kind = SF_OTHER};
    return parse_inner_list(c);
  }
  if (parse_bare_item(c, v) != 0)
    return H3G_ERR_PROTO;
  return parse_parameters(c);
}

int h3g_priority_parse(h3g_priority *p, const uint8_t *value, size_t len) {
  sf_cursor c = {value, value + len};
  h3g_priority out = *p;
  int found = 0;

  skip_sp(&c);
  /* An empty value is an empty Dictionary (RFC 8941 §4.2). */
  while (!at_end(&c)) {
    const uint8_t *key;
    size_t keylen;
    sf_value v;
    if (parse_key(&c, &key, &keylen) != 0)
      return H3G_ERR_PROTO;
    if (peek(&c) == '=') {
      c.p++;
      if (parse_member_value(&c, &v) != 0)
        return H3G_ERR_PROTO;
    } else {
      v = (sf_value){.kind = SF_BOOLEAN, .boolean = 1};
      if (parse_parameters(&c) != 0)
        return H3G_ERR_PROTO;
    }
    if (keylen == 1 && key[0] == 'u') {
      /* The last `u` counts: an invalid one cancels an earlier one, as if
       * the Dictionary had only kept the last. */
      if (v.kind == SF_INTEGER && v.integer >= 0 && v.integer <= 7) {
        out.urgency = (uint8_t)v.integer;
        found |= H3G_PRIORITY_HAS_U;
      } else {
        out.urgency = p->urgency;
        found &= ~H3G_PRIORITY_HAS_U;
      }
    } else if (keylen == 1 && key[0] == 'i') {
      if (v.kind == SF_BOOLEAN) {
        out.incremental = (uint8_t)v.boolean;
        found |= H3G_PRIORITY_HAS_I;
      } else {
        out.incremental = p->incremental;
        found &= ~H3G_PRIORITY_HAS_I;
      }
    }
    skip_ows(&c);
    if (at_end(&c))
      break;
    if (*c.p != ',')
      return H3G_ERR_PROTO;
    c.p++;
    skip_ows(&c);
    if (at_end(&c))
      return H3G_ERR_PROTO; /* trailing comma */
  }
  *p = out;
  return found;
}

static int name_is_priority(const h3g_field *f) {
  static const char name[] = "priority";
  if (f->namelen != sizeof(name) - 1)
    return 0;
  for (size_t i = 0; i < f->namelen; i++) {
    uint8_t ch = f->name[i];
    if (ch >= 'A' && ch <= 'Z')
      ch = (uint8_t)(ch + ('a' - 'A'));
    if (ch != (uint8_t)name[i])
      return 0;
  }
  return 1;
}

/* Parses every priority line of fields over *p as one value, the lines
 * joined with ", " (RFC 9110 §5.3), so that a key repeated on a later line
 * counts as a repeat within one Dictionary. Returns the mask of parameters
 * found, or H3G_ERR_PROTO (then *p is untouched). */
static int parse_lines(h3g_priority *p, const h3g_field *fields, size_t n) {
  const h3g_field *only = NULL;
  size_t lines = 0, total = 0;
  for (size_t i = 0; i < n; i++) {
    if (name_is_priority(&fields[i])) {
      only = &fields[i];
      lines++;
      total += fields[i].valuelen + 2;
    }
  }
  if (lines == 0)
    return 0;
  if (lines == 1)
    return h3g_priority_parse(p, only->value, only->valuelen);
  uint8_t *joined = malloc(total);
  if (joined == NULL)
    return H3G_ERR_NOMEM;
  size_t len = 0;
  for (size_t i = 0; i < n; i++) {
    if (!name_is_priority(&fields[i]) || fields[i].valuelen == 0)
      continue;
    if (len > 0) {
      joined[len++] = ',';
      joined[len++] = ' ';
    }
    memcpy(joined + len, fields[i].value, fields[i].valuelen);
    len += fields[i].valuelen;
  }
  int rv = h3g_priority_parse(p, joined, len);
  free(joined);
  return rv;
}

h3g_priority h3g_priority_of_request(const h3g_headers *fields) {
  h3g_priority p = H3G_PRIORITY_DEFAULT;
  (void)parse_lines(&p, fields->fields, fields->nfields);
  return p;
}

int h3g_priority_merge_response(h3g_priority *p, const h3g_field *fields,
                                size_t n) {
  int rv = parse_lines(p, fields, n);
  return rv > 0;
}
