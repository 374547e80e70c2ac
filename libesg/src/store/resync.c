/*
 * Resync of slow data (DESIGN.md "Resync of slow data", docs/resync.md): cursor
 * jobs, snapshot diff and replay. All three emit events the same way (emit()
 * below): into the event log, which deduplicates by id, and to an optional sink,
 * inside the transaction that also records progress (the cursor, or the listing
 * state), so progress and emission commit or vanish together.
 *
 * Ids are deterministic (UUIDv5 of what identifies the change) so that work
 * repeated after a crash emits the same ids again and consumers can dedupe.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store/store_int.h"

/* ------------------------------------------------------------ JSON builder -- */

typedef struct jbuf {
  char *p;
  size_t len, cap;
  bool oom;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + n + 1) cap *= 2;
    char *q = esg__realloc(b->p, cap);
    if (!q) {
      b->oom = true;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void jb_raw(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }

static void jb_str(jbuf *b, const char *s) {
  jb_put(b, "\"", 1);
  const char *run = s;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    jb_put(b, run, (size_t)(s - run));
    char esc[8];
    if (c == '"' || c == '\\') snprintf(esc, sizeof esc, "\\%c", c);
    else snprintf(esc, sizeof esc, "\\u%04x", c);
    jb_raw(b, esc);
    run = s + 1;
  }
  jb_put(b, run, (size_t)(s - run));
  jb_put(b, "\"", 1);
}

static void jb_int(jbuf *b, int64_t v) {
  char n[24], *q = n + sizeof n;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do *--q = (char)('0' + u % 10); while (u /= 10);
  if (v < 0) *--q = '-';
  jb_put(b, q, (size_t)(n + sizeof n - q));
}

/* One event to build: data NULL leaves the entity out; tags are name/value pairs. */
typedef struct ev_spec {
  const char *id, *type, *pkey, *field;
  int64_t ts;
  const char *data;
  size_t data_len;
  const char *tags[8]; /* name, value, name, value...; NULL-terminated */
} ev_spec;

static void build_event(jbuf *b, const ev_spec *e) {
  b->len = 0;
  b->oom = false;
  jb_raw(b, "{\"id\":");
  jb_str(b, e->id);
  jb_raw(b, ",\"type\":");
  jb_str(b, e->type);
  jb_raw(b, ",\"timestamp\":");
  jb_int(b, e->ts);
  jb_raw(b, ",\"partitionKey\":");
  jb_str(b, e->pkey);
  if (e->data) {
    jb_raw(b, ",");
    jb_str(b, e->field);
    jb_raw(b, ":");
    jb_put(b, e->data, e->data_len);
  }
  jb_raw(b, ",\"tags\":{");
  for (int i = 0; e->tags[i]; i += 2) {
    if (i) jb_raw(b, ",");
    jb_str(b, e->tags[i]);
    jb_raw(b, ":");
    jb_str(b, e->tags[i + 1]);
  }
  jb_raw(b, "}}");
}

/* UUIDv5 of the parts joined by NUL bytes (a part cannot contain NUL, so joins cannot collide). */
static int make_id(const char *const *parts, int n, char out[37]) {
  size_t len = 0;
  for (int i = 0; i < n; i++) len += strlen(parts[i]) + 1;
  char stackbuf[1024], *name = len <= sizeof stackbuf ? stackbuf : esg__malloc(len);
  if (!name) return ESG_ENOMEM;
  size_t at = 0;
  for (int i = 0; i < n; i++) {
    size_t l = strlen(parts[i]);
    memcpy(name + at, parts[i], l);
    at += l;
    if (i + 1 < n) name[at++] = '\0';
  }
  int rc = esg_uuid5(ESG_UUID_NS_EVENT, name, at, out);
  if (name != stackbuf) esg__free(name);
  return rc;
}

/* ------------------------------------------------------------------- emit -- */

typedef struct emitter {
  esg_store *s;
  esg_resync_opts o;
  esg_resync_stats *st;
  jbuf json;
} emitter;

static const char *const reserved[] = {"id", "type", "timestamp", "partitionKey", "tags", NULL};

static int check_opts(esg__err *err, const esg_resync_opts *o) {
  if (o->no_log && !o->sink) return esg__fail(err, ESG_EINVAL, "no_log needs a sink, or the events go nowhere");
  if (o->log_ttl_ms < 0) return esg__fail(err, ESG_EINVAL, "log_ttl_ms must not be negative");
  if (o->batch < 0 || o->max_pages < 0) return esg__fail(err, ESG_EINVAL, "batch and max_pages must not be negative");
  int rc = esg__check_key(err, "entity_field", o->entity_field);
  if (rc != ESG_OK) return rc;
  for (int i = 0; reserved[i]; i++)
    if (strcmp(o->entity_field, reserved[i]) == 0)
      return esg__fail(err, ESG_EINVAL, "entity_field \"%s\" is an envelope field", o->entity_field);
  return esg__check_key(err, "event type", o->type);
}

/* The caller's options by the ABI rule, with their defaults, checked. */
static int take_opts(esg__err *err, const esg_resync_opts *opts, esg_resync_opts *o) {
  int rc = ESG__OPTS_COPY(err, esg_resync_opts, o, opts);
  if (rc != ESG_OK) return rc;
  if (!o->entity_field) o->entity_field = "entity";
  if (!o->type) o->type = "entity";
  if (!o->batch) o->batch = 1000;
  return check_opts(err, o);
}

/* Stores the built event (b->json) and hands it to the sink; in the caller's transaction. */
static int emit(emitter *em, const ev_spec *e, esg__err *err) {
  esg_store *s = em->s;
  if (em->json.oom) return esg__fail(err, ESG_ENOMEM, "out of memory building an event");
  if (em->json.len > ESG_EVENT_MAX_BYTES)
    return esg__fail(err, ESG_ETOOBIG, "the event for \"%s\" is %zu bytes; the limit is %d", e->pkey, em->json.len,
                     ESG_EVENT_MAX_BYTES);
  int64_t now = esg__now(s);
  esg_stored_event row = {0};
  row.id = e->id;
  row.type = e->type;
  row.timestamp = e->ts;
  row.corr_key = e->pkey;
  row.json = em->json.p;
  row.json_len = em->json.len;
  row.expires = em->o.log_ttl_ms ? esg__time_add(now, em->o.log_ttl_ms) : 0;
  if (!em->o.no_log) {
    int rc = esg__event_store(s, &row);
    if (rc == ESG_DUPLICATE) {
      em->st->duplicates++;
      return ESG_OK;
    }
    if (rc != ESG_OK) return esg__fail(err, rc, "%s", s->err.msg);
  }
  int bad = 0;
  if (em->o.sink) ESG__COUNTED(s, bad = em->o.sink(em->o.sink_ud, &row));
  if (bad)
    return esg__fail(err, ESG_ECALLBACK, "the sink failed on event %s for \"%s\"", e->id, e->pkey);
  em->st->emitted++;
  return ESG_OK;
}

/* Checks that data[0..len) is one JSON value (with only white space around it). */
static int check_json(esg__err *err, const char *what, const char *name, const char *data, size_t len) {
  if (!data) return esg__fail(err, ESG_EINVAL, "%s \"%s\": content is NULL", what, name);
  if (len > ESG_EVENT_MAX_BYTES)
    return esg__fail(err, ESG_ETOOBIG, "%s \"%s\": content is %zu bytes; the limit is %d", what, name, len,
                     ESG_EVENT_MAX_BYTES);
  unsigned nomem = esg__nomem_count();
  cJSON *v = esg__json_parse(data, len, NULL);
  if (!v && esg__nomem_count() != nomem)
    return esg__fail(err, ESG_ENOMEM, "%s \"%s\": out of memory checking the content", what, name);
  bool ok = v != NULL;
  cJSON_Delete(v);
  return ok ? ESG_OK : esg__fail(err, ESG_EJSON, "%s \"%s\": content is not valid JSON", what, name);
}

/* ---------------------------------------------------------------- cursors -- */

int esg_cursor_get(esg_store *s, const char *name, char **out) {
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!out) return esg__fail(&s->err, ESG_EINVAL, "out is NULL");
  *out = NULL;
  if ((rc = esg__check_key(&s->err, "cursor name", name)) != ESG_OK) return rc;
  const char *c = NULL;
  rc = s->be->cursor_get(s->b, name, &c);
  if (rc == ESG_NOT_FOUND) return esg__fail(&s->err, rc, "no cursor named \"%s\"", name);
  if (rc != ESG_OK) return rc;
  if (!(*out = esg__strdup(c))) return esg__fail(&s->err, ESG_ENOMEM, "out of memory copying a cursor");
  return ESG_OK;
}

static int check_cursor(esg__err *err, const char *cursor) {
  if (!cursor) return esg__fail(err, ESG_EINVAL, "cursor is NULL");
  size_t n = strlen(cursor);
  if (n > ESG_CURSOR_MAX) return esg__fail(err, ESG_ETOOBIG, "cursor is %zu bytes; the limit is %d", n, ESG_CURSOR_MAX);
  return ESG_OK;
}

int esg_cursor_set(esg_store *s, const char *name, const char *cursor) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "cursor name", name);
  if (rc == ESG_OK) rc = check_cursor(&s->err, cursor);
  if (rc != ESG_OK) return rc;
  return s->be->cursor_put(s->b, name, cursor, esg__now(s));
}

int esg_cursor_delete(esg_store *s, const char *name) {
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "cursor name", name);
  if (rc != ESG_OK) return rc;
  rc = s->be->cursor_delete(s->b, name);
  return rc == ESG_NOT_FOUND ? esg__fail(&s->err, rc, "no cursor named \"%s\"", name) : rc;
}

/* Every item of a page is checked before anything is written, so a bad item leaves the store as it was. */
static int check_page(esg_store *s, const esg_resync_page *pg) {
  if (pg->n && !pg->items) return esg__fail(&s->err, ESG_EINVAL, "page has %zu items but items is NULL", pg->n);
  if (!pg->next_cursor && !(pg->n == 0 && pg->done))
    return esg__fail(&s->err, ESG_EINVAL, "page has no next_cursor");
  if (pg->next_cursor && check_cursor(&s->err, pg->next_cursor) != ESG_OK) return ESG_ETOOBIG;
  for (size_t i = 0; i < pg->n; i++) {
    const esg_resync_item *it = &pg->items[i];
    char what[96];
    snprintf(what, sizeof what, "item %zu: id", i);
    int rc = esg__check_key(&s->err, what, it->id);
    if (rc == ESG_OK) {
      snprintf(what, sizeof what, "item %zu (\"%.20s\"): version", i, it->id);
      rc = esg__check_key(&s->err, what, it->version);
    }
    if (rc == ESG_OK) {
      snprintf(what, sizeof what, "item %zu (\"%.20s\"): type", i, it->id);
      rc = esg__check_key(&s->err, what, it->type);
    }
    if (rc == ESG_OK && it->partition_key) {
      snprintf(what, sizeof what, "item %zu (\"%.20s\"): partition_key", i, it->id);
      rc = esg__check_key(&s->err, what, it->partition_key);
    }
    if (rc == ESG_OK) rc = check_json(&s->err, "item", it->id, it->data, it->data_len);
    if (rc != ESG_OK) return rc;
  }
  return ESG_OK;
}

static int emit_item(emitter *em, const char *source, const esg_resync_item *it) {
  char id[37];
  const char *parts[3] = {source, it->id, it->version};
  if (make_id(parts, 3, id) != ESG_OK) return esg__fail(&em->s->err, ESG_ENOMEM, "out of memory making an id");
  ev_spec e = {0};
  e.id = id;
  e.type = it->type;
  e.pkey = it->partition_key ? it->partition_key : it->id;
  e.field = em->o.entity_field;
  e.ts = it->timestamp ? it->timestamp : esg__now(em->s);
  e.data = it->data;
  e.data_len = it->data_len;
  const char *tags[] = {"source", source, "itemId", it->id, "itemVersion", it->version, NULL};
  memcpy(e.tags, tags, sizeof tags);
  build_event(&em->json, &e);
  return emit(em, &e, &em->s->err);
}


/* One page: fetch outside any transaction, then emit it and move the cursor in one. */
static int run_page(emitter *em, const char *name, const char *source, esg_fetch_fn fetch, void *ud) {
  esg_store *s = em->s;
  const char *c = NULL;
  char *cur = NULL;
  int rc = s->be->cursor_get(s->b, name, &c);
  if (rc == ESG_OK && !(cur = esg__strdup(c))) rc = esg__fail(&s->err, ESG_ENOMEM, "out of memory copying a cursor");
  if (rc != ESG_OK && rc != ESG_NOT_FOUND) return rc;
  esg_resync_page pg = {0};
  int bad;
  ESG__COUNTED(s, bad = fetch(ud, cur, &pg));
  if (bad) {
    esg__fail(&s->err, ESG_ECALLBACK, "fetching the page after cursor \"%.40s\" failed", cur ? cur : "");
    esg__free(cur);
    return ESG_ECALLBACK;
  }
  if ((rc = check_page(s, &pg)) != ESG_OK || (rc = esg_store_begin(s)) != ESG_OK) {
    esg__free(cur);
    return rc;
  }
  /* another process may have run this job meanwhile: then this page is not ours to commit */
  rc = s->be->cursor_advance(s->b, name, cur, pg.next_cursor, esg__now(s));
  if (rc == ESG_BUSY) {
    esg__free(cur);
    esg_store_rollback(s);
    return ESG_BUSY; /* go on from the new cursor */
  }
  if (rc != ESG_OK) goto fail;
  for (size_t i = 0; i < pg.n; i++)
    if ((rc = emit_item(em, source, &pg.items[i])) != ESG_OK) goto fail;
  esg__free(cur);
  if ((rc = esg_store_commit(s)) != ESG_OK) return rc;
  em->st->pages++;
  if (pg.done) em->st->done = 1;
  return ESG_OK;
fail:
  esg__free(cur);
  esg_store_rollback(s);
  return rc;
}

int esg_cursor_run(esg_store *s, const char *name, const char *source, esg_fetch_fn fetch, void *fetch_ud,
                   const esg_resync_opts *opts, esg_resync_stats *stats) {
  esg_resync_stats local;
  if (!stats) stats = &local;
  memset(stats, 0, sizeof *stats);
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "cursor name", name);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "source", source);
  if (rc != ESG_OK) return rc;
  if (!fetch) return esg__fail(&s->err, ESG_EINVAL, "fetch is NULL");
  if (s->batch) return esg__fail(&s->err, ESG_ESTATE, "a cursor job cannot run inside a batch: each page commits");
  emitter em = {s, {0}, stats, {0}};
  if ((rc = take_opts(&s->err, opts, &em.o)) != ESG_OK) return rc;
  for (int64_t pages = 0; !stats->done && (em.o.max_pages == 0 || pages < em.o.max_pages);) {
    rc = run_page(&em, name, source, fetch, fetch_ud);
    if (rc == ESG_BUSY) continue;
    if (rc != ESG_OK) break;
    pages++;
  }
  esg__free(em.json.p);
  return rc == ESG_BUSY ? ESG_OK : rc;
}

/* --------------------------------------------------------------- snapshot -- */

struct esg_snapshot {
  esg__err err; /* first: see esg__err */
  emitter em;   /* em.s is NULL once the store closed (see esg__dep) */
  esg__dep dep;
  esg_resync_stats st;
  char *source;
  int64_t gen;
  char gen_text[24];
  int in_batch;     /* entries in the open batch; 0 = none open */
  bool failed;
};

static void snapshot_detach(esg__dep *d);

int esg_snapshot_begin(esg_snapshot **out, esg_store *s, const char *source, const esg_resync_opts *opts) {
  if (!out) return esg__fail(s ? &s->err : NULL, ESG_EINVAL, "out is NULL");
  *out = NULL;
  int rc = esg__enter(s);
  if (rc == ESG_OK) rc = esg__check_key(&s->err, "source", source);
  if (rc != ESG_OK) return rc;
  if (s->batch) return esg__fail(&s->err, ESG_ESTATE, "a listing cannot run inside a batch: it commits its own");
  esg_resync_opts o;
  if ((rc = take_opts(&s->err, opts, &o)) != ESG_OK) return rc;
  esg_snapshot *sn = esg__calloc(1, sizeof *sn);
  if (!sn || !(sn->source = esg__strdup(source))) {
    esg__free(sn);
    return esg__fail(&s->err, ESG_ENOMEM, "out of memory starting a listing");
  }
  esg__handle_init(&sn->err, ESG__H_SNAPSHOT);
  sn->em.s = s;
  sn->em.o = o;
  sn->em.st = &sn->st;
  rc = s->be->snap_open(s->b, source, esg__now(s), &sn->gen);
  if (rc != ESG_OK) {
    esg__free(sn->source);
    esg__free(sn);
    return rc;
  }
  snprintf(sn->gen_text, sizeof sn->gen_text, "%" PRId64, sn->gen);
  esg__dep_link(s, &sn->dep, snapshot_detach);
  *out = sn;
  return ESG_OK;
}

/* Ends the open batch: commit (rc >= 0) or roll back, and then the listing is failed. */
static int end_batch(esg_snapshot *sn, int rc) {
  esg_store *s = sn->em.s;
  if (!sn->in_batch) return rc;
  sn->in_batch = 0;
  if (rc < 0) {
    esg_store_rollback(s);
    sn->failed = true;
    return rc;
  }
  int crc = esg_store_commit(s);
  if (crc != ESG_OK) {
    sn->failed = true;
    return esg__fail(&sn->err, crc, "%s", s->err.msg);
  }
  return rc;
}

static int begin_batch(esg_snapshot *sn) {
  if (sn->in_batch) return ESG_OK;
  int rc = esg_store_begin(sn->em.s);
  if (rc != ESG_OK) return esg__fail(&sn->err, rc, "%s", sn->em.s->err.msg);
  sn->in_batch = 1;
  return ESG_OK;
}

/* prev: an update's previous hash, in its id, so that content changed back and forth
   within one (resumed) generation makes a new event each time; NULL otherwise. */
static int emit_change(esg_snapshot *sn, const char *kind, const char *key, const uint8_t hash[32],
                       const uint8_t *prev, const char *content, size_t len) {
  char hex[65], prev_hex[65], id[37], type[ESG_KEY_MAX + 16];
  esg_hex(hash, 32, hex);
  if (prev) esg_hex(prev, 32, prev_hex);
  const char *parts[6] = {sn->source, key, kind, sn->gen_text, hex, prev_hex};
  if (make_id(parts, prev ? 6 : 5, id) != ESG_OK) return esg__fail(&sn->err, ESG_ENOMEM, "out of memory making an id");
  snprintf(type, sizeof type, "%s-%s", sn->em.o.type, kind);
  ev_spec e = {0};
  e.id = id;
  e.type = type;
  e.pkey = key;
  e.field = sn->em.o.entity_field;
  e.ts = esg__now(sn->em.s);
  e.data = content;
  e.data_len = len;
  const char *tags[] = {"source", sn->source, "snapshot", sn->gen_text, "contentHash", hex, NULL};
  memcpy(e.tags, tags, sizeof tags);
  build_event(&sn->em.json, &e);
  return emit(&sn->em, &e, &sn->err);
}

/* Records one entry (the backend decides created / updated / unchanged) and emits the change; in the open batch. */
static int diff_one(esg_snapshot *sn, const char *key, const uint8_t hash[32], const char *content, size_t len) {
  esg_store *s = sn->em.s;
  uint8_t prev[32];
  int rc = s->be->snap_see(s->b, sn->source, key, hash, sn->gen, prev);
  if (rc < 0) return esg__fail(&sn->err, rc, "%s", s->err.msg);
  if (rc == ESG__SNAP_UNCHANGED) {
    sn->st.unchanged++;
    return ESG_OK;
  }
  if (rc == ESG__SNAP_UPDATED) {
    sn->st.updated++;
    return emit_change(sn, "updated", key, hash, prev, content, len);
  }
  sn->st.created++;
  return emit_change(sn, "created", key, hash, NULL, content, len);
}

int esg_snapshot_add(esg_snapshot *sn, const char *key, const char *content, size_t len) {
  if (!sn) return esg__fail(NULL, ESG_EINVAL, "snapshot is NULL");
  if (!sn->em.s) return esg__fail(&sn->err, ESG_ESTATE, "the listing's store was closed");
  if (sn->failed) return esg__fail(&sn->err, ESG_ESTATE, "the listing failed earlier; begin it again");
  int rc = esg__enter(sn->em.s);
  if (rc != ESG_OK) return esg__fail(&sn->err, rc, "%s", sn->em.s->err.msg);
  rc = esg__check_key(&sn->err, "listing key", key);
  if (rc != ESG_OK) return rc;
  if (!content) return esg__fail(&sn->err, ESG_EINVAL, "listing entry \"%s\": content is NULL", key);
  if (len > ESG_EVENT_MAX_BYTES)
    return esg__fail(&sn->err, ESG_ETOOBIG, "listing entry \"%s\": content is %zu bytes; the limit is %d", key, len,
                     ESG_EVENT_MAX_BYTES);
  uint8_t hash[32];
  if ((rc = esg__content_hash_bin(content, len, hash)) != ESG_OK)
    return esg__fail(&sn->err, rc, "listing entry \"%s\": %s", key,
                     rc == ESG_EJSON ? "content is not valid JSON" : "out of memory hashing content");
  if ((rc = begin_batch(sn)) != ESG_OK) return rc;
  rc = diff_one(sn, key, hash, content, len);
  if (rc < 0) return end_batch(sn, rc);
  if (++sn->in_batch > sn->em.o.batch) return end_batch(sn, ESG_OK);
  return ESG_OK;
}

typedef struct sweep_ctx {
  esg_snapshot *sn;
  char *last;
  int rc;
} sweep_ctx;

static int sweep_one(void *ud, const char *key, const uint8_t hash[32]) {
  sweep_ctx *c = ud;
  esg_snapshot *sn = c->sn;
  esg_store *s = sn->em.s;
  esg__free(c->last);
  if (!(c->last = esg__strdup(key))) {
    c->rc = esg__fail(&sn->err, ESG_ENOMEM, "out of memory sweeping a listing");
    return 1;
  }
  int rc = emit_change(sn, "deleted", key, hash, NULL, NULL, 0);
  if (rc == ESG_OK && (rc = s->be->snap_forget(s->b, sn->source, key)) != ESG_OK)
    rc = esg__fail(&sn->err, rc, "%s", s->err.msg);
  if (rc != ESG_OK) {
    c->rc = rc;
    return 1;
  }
  sn->st.deleted++;
  return 0;
}

int esg_snapshot_finish(esg_snapshot *sn, esg_resync_stats *stats) {
  if (!sn) return esg__fail(NULL, ESG_EINVAL, "snapshot is NULL");
  if (!sn->em.s) return esg__fail(&sn->err, ESG_ESTATE, "the listing's store was closed");
  if (sn->failed) return esg__fail(&sn->err, ESG_ESTATE, "the listing failed earlier; begin it again");
  esg_store *s = sn->em.s;
  if (esg__enter(s) != ESG_OK) return esg__fail(&sn->err, ESG_ESTATE, "%s", s->err.msg);
  int rc = end_batch(sn, ESG_OK);
  bool marked = rc >= 0; /* the last adds' marks are stored */
  /* mark and sweep: what this generation did not see is gone; one batch per page of keys */
  sweep_ctx c = {sn, NULL, ESG_OK};
  for (int n = sn->em.o.batch; rc == ESG_OK && n == sn->em.o.batch;) {
    if ((rc = begin_batch(sn)) != ESG_OK) break;
    rc = s->be->snap_unseen(s->b, sn->source, sn->gen, c.last ? c.last : "", sn->em.o.batch, sweep_one, &c, &n);
    if (rc == ESG_ECALLBACK) rc = c.rc;
    else if (rc != ESG_OK) rc = esg__fail(&sn->err, rc, "%s", s->err.msg);
    if (rc == ESG_OK && n < sn->em.o.batch && (rc = s->be->snap_close(s->b, sn->source, sn->gen)) != ESG_OK)
      rc = esg__fail(&sn->err, rc, "%s", s->err.msg);
    rc = end_batch(sn, rc);
  }
  esg__free(c.last);
  /* A failed sweep rolled back alone: the marks stand, and the caller may finish again.
     Failed adds lost their marks: a sweep now would delete keys the listing holds. */
  if (rc < 0 && marked) sn->failed = false;
  if (stats) *stats = sn->st;
  return rc;
}

/* The store is closing: the listing is abandoned, its open batch rolled back. */
static void snapshot_detach(esg__dep *d) {
  esg_snapshot *sn = (esg_snapshot *)((char *)d - offsetof(esg_snapshot, dep));
  end_batch(sn, ESG_ESTATE);
  sn->em.s = NULL;
}

void esg_snapshot_close(esg_snapshot *sn) {
  if (!sn) return;
  esg__dep_unlink(&sn->dep);
  if (sn->em.s) end_batch(sn, ESG_OK);
  esg__free(sn->em.json.p);
  esg__free(sn->source);
  esg__handle_end(&sn->err);
  esg__free(sn);
}

/* ----------------------------------------------------------------- replay -- */

int esg_replay(esg_store *s, const esg_replay_filter *filter, esg_event_cb cb, void *ud, int64_t *n) {
  if (n) *n = 0;
  int rc = esg__enter_read(s);
  if (rc != ESG_OK) return rc;
  if (!cb) return esg__fail(&s->err, ESG_EINVAL, "callback is NULL");
  esg_replay_filter f = {0};
  if (filter) f = *filter;
  if (f.corr_key && (rc = esg__check_key(&s->err, "replay correlation key", f.corr_key)) != ESG_OK) return rc;
  if (f.type && (rc = esg__check_key(&s->err, "replay type", f.type)) != ESG_OK) return rc;
  if (f.until && f.until <= f.since)
    return esg__fail(&s->err, ESG_EINVAL, "replay range is empty: until (%lld) <= since (%lld)", (long long)f.until,
                     (long long)f.since);
  int64_t now = esg__now(s);
  ESG__COUNTED(s, rc = s->be->replay(s->b, &f, now, cb, ud, n));
  return rc;
}
