/*
 * The egress scheduling structures: the lane table (partition key -> lane, so
 * deliveries of one key wait behind its head), the ready FIFO (lanes whose head
 * may be sent now, served in arrival order so no key starves), and the timer
 * heap (lanes whose head waits for a backoff, earliest first).
 */
#include <stdlib.h>
#include <string.h>
#include "egress_int.h"
#include "core/internal.h"

esg__lane *esg__lanes_find(esg__lanes *t, const char *key, uint64_t h) {
  if (!t->nb) return NULL;
  for (esg__lane *l = t->b[h & (t->nb - 1)]; l; l = l->hnext)
    if (l->hash == h && strcmp(l->key, key) == 0) return l;
  return NULL;
}

static int grow(esg__lanes *t) {
  size_t nb = t->nb ? t->nb * 2 : 64;
  esg__lane **b = esg__calloc(nb, sizeof *b);
  if (!b) return ESG_ENOMEM;
  for (size_t i = 0; i < t->nb; i++) {
    esg__lane *l = t->b[i];
    while (l) {
      esg__lane *next = l->hnext;
      l->hnext = b[l->hash & (nb - 1)];
      b[l->hash & (nb - 1)] = l;
      l = next;
    }
  }
  esg__free(t->b);
  t->b = b;
  t->nb = nb;
  return ESG_OK;
}

int esg__lanes_add(esg__lanes *t, esg__lane *l) {
  if (t->n >= t->nb && grow(t) != ESG_OK) return ESG_ENOMEM;
  esg__lane **slot = &t->b[l->hash & (t->nb - 1)];
  l->hnext = *slot;
  *slot = l;
  t->n++;
  return ESG_OK;
}

void esg__lanes_remove(esg__lanes *t, esg__lane *l) {
  for (esg__lane **p = &t->b[l->hash & (t->nb - 1)]; *p; p = &(*p)->hnext)
    if (*p == l) {
      *p = l->hnext;
      t->n--;
      return;
    }
}

void esg__lanes_free(esg__lanes *t) {
  esg__free(t->b);
  memset(t, 0, sizeof *t);
}

static bool earlier(const esg__lane *a, const esg__lane *b) { return a->head->next_at < b->head->next_at; }

static void put(esg__heap *h, size_t i, esg__lane *l) {
  h->a[i] = l;
  l->heap_at = i;
}

int esg__heap_push(esg__heap *h, esg__lane *l) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    esg__lane **a = esg__realloc(h->a, cap * sizeof *a);
    if (!a) return ESG_ENOMEM;
    h->a = a;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!earlier(l, h->a[p])) break;
    put(h, i, h->a[p]);
    i = p;
  }
  put(h, i, l);
  return ESG_OK;
}

esg__lane *esg__heap_top(const esg__heap *h) { return h->n ? h->a[0] : NULL; }

esg__lane *esg__heap_pop(esg__heap *h) {
  if (!h->n) return NULL;
  esg__lane *top = h->a[0], *last = h->a[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && earlier(h->a[c + 1], h->a[c])) c++;
    if (!earlier(h->a[c], last)) break;
    put(h, i, h->a[c]);
    i = c;
  }
  if (h->n) put(h, i, last);
  return top;
}

void esg__heap_free(esg__heap *h) {
  esg__free(h->a);
  memset(h, 0, sizeof *h);
}

void esg__ready_push(esg__ready *r, esg__lane *l) {
  l->rnext = NULL;
  if (r->tail) r->tail->rnext = l;
  else r->head = l;
  r->tail = l;
}

esg__lane *esg__ready_pop(esg__ready *r) {
  esg__lane *l = r->head;
  if (!l) return NULL;
  r->head = l->rnext;
  if (!r->head) r->tail = NULL;
  l->rnext = NULL;
  return l;
}
