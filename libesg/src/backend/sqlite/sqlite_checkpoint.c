/*
 * WAL checkpoints off the caller's thread. SQLite's default copies the log back
 * into the database inside the commit that pushes the log past 1000 pages, with
 * two fsyncs: a stall of milliseconds in whatever loop made that commit (an
 * egress engine stops delivering meanwhile). Here the commit only asks, and a
 * thread with its own connection does the copying (a PASSIVE checkpoint: it never
 * waits for, nor blocks, the writer or the readers).
 *
 * The log restarts from its beginning only when a write begins after a checkpoint
 * that copied all of it, which a checkpoint racing the writer never sees while the
 * writer keeps writing; so when the log reaches RUNAWAY pages the commit
 * checkpoints inline, as SQLite would have, finding most of the copying done. Only
 * one checkpoint runs at a time (a second one gets SQLITE_BUSY at once), so that
 * commit first waits for the thread's to end.
 *
 * fork() while the thread is inside SQLite could leave the child with SQLite's
 * internal locks (its allocator's, say) held by a thread that is not there, and
 * the child's first SQLite call would wait forever. So the threads make their
 * SQLite calls under one process-wide lock, which fork() takes first
 * (pthread_atfork): the child starts with no checkpoint half done.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sqlite_int.h"

#define THRESHOLD 1000        /* pages: SQLite's own autocheckpoint point */
#define RUNAWAY (4 * THRESHOLD)

struct esg__ckpt {
  char *path;                 /* the database file, for the thread's own connection */
  sqlite3 *db;                /* that connection, under in_sqlite */
  pid_t pid;                  /* the process the thread runs in */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  pthread_cond_t idle;         /* signalled when the thread's checkpoint ends */
  bool started, failed, want, stop, copying;
  int asked;                  /* log pages at the last request (the committing thread's) */
};

/* Held by a checkpoint thread while it is inside SQLite, and by fork() (see above). */
static pthread_mutex_t in_sqlite = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void fork_prepare(void) { pthread_mutex_lock(&in_sqlite); }
static void fork_done(void) { pthread_mutex_unlock(&in_sqlite); }
static void atfork_init(void) { pthread_atfork(fork_prepare, fork_done, fork_done); }

static void *ckpt_main(void *arg) {
  esg__ckpt *c = arg;
  pthread_mutex_lock(&in_sqlite);
  /* A connection opens the log at its first read, and a checkpoint on one that has
     not done so returns SQLITE_OK having copied nothing: so read the header first. */
  if (sqlite3_open_v2(c->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
      sqlite3_exec(c->db, "PRAGMA schema_version", NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_close(c->db);
    c->db = NULL;
  }
  bool ok = c->db != NULL;
  pthread_mutex_unlock(&in_sqlite);
  pthread_mutex_lock(&c->mu);
  if (!ok) c->failed = true; /* commits go back to checkpointing inline */
  while (ok && !c->stop) {
    if (!c->want) {
      pthread_cond_wait(&c->cv, &c->mu);
      continue;
    }
    c->want = false;
    c->copying = true;
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_lock(&in_sqlite);
    sqlite3_wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL); /* a miss is retried next commit */
    pthread_mutex_unlock(&in_sqlite);
    pthread_mutex_lock(&c->mu);
    c->copying = false;
    pthread_cond_broadcast(&c->idle);
  }
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_lock(&in_sqlite);
  sqlite3_close(c->db);
  c->db = NULL;
  pthread_mutex_unlock(&in_sqlite);
  return NULL;
}

/* Asks the thread for a checkpoint, starting it the first time; false when it cannot run here. */
static bool ask(esg__ckpt *c) {
  if (c->pid != getpid()) return false;
  pthread_mutex_lock(&c->mu);
  if (!c->started && !c->failed) {
    pthread_once(&atfork_once, atfork_init);
    c->started = pthread_create(&c->thread, NULL, ckpt_main, c) == 0;
    c->failed = !c->started;
  }
  bool ok = !c->failed;
  if (ok && !c->want) {
    c->want = true;
    pthread_cond_signal(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  return ok;
}

/* Waits until the thread is not inside a checkpoint. */
static void wait_idle(esg__ckpt *c) {
  pthread_mutex_lock(&c->mu);
  while (c->copying) pthread_cond_wait(&c->idle, &c->mu);
  pthread_mutex_unlock(&c->mu);
}

/* After each commit: a request per THRESHOLD pages the log grew (a checkpoint costs
   two fsyncs, which compete with the writer's own), inline past RUNAWAY. */
static int on_commit(void *ud, sqlite3 *db, const char *name, int pages) {
  esg__ckpt *c = ud;
  if (pages < c->asked) c->asked = 0; /* the log restarted */
  if (pages - c->asked < THRESHOLD) return SQLITE_OK;
  c->asked = pages;
  if (pages < RUNAWAY && ask(c)) return SQLITE_OK;
  if (c->pid == getpid()) wait_idle(c); /* the thread's own copying, if any, first */
  sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  return SQLITE_OK;
}

esg__ckpt *esg__ckpt_attach(sqlite3 *db) {
  const char *path = sqlite3_db_filename(db, "main");
  if (!path || !*path) return NULL; /* in memory: nothing to copy back */
  esg__ckpt *c = esg__calloc(1, sizeof *c);
  if (!c || !(c->path = esg__strdup(path))) {
    esg__free(c);
    return NULL; /* SQLite's own inline checkpoints stay */
  }
  c->pid = getpid();
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  pthread_cond_init(&c->idle, NULL);
  sqlite3_wal_hook(db, on_commit, c); /* replaces the inline autocheckpoint */
  return c;
}

void esg__ckpt_detach(sqlite3 *db, esg__ckpt *c) {
  if (!c) return;
  sqlite3_wal_hook(db, NULL, NULL);
  if (c->pid == getpid()) {
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cv);
    bool started = c->started;
    pthread_mutex_unlock(&c->mu);
    if (started) pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->mu);
  } else {
    /* after fork(): the thread (and its lock) stayed with the parent; its connection's
       memory came along, idle, and is left untouched as the handle's own is */
    esg__sq_keep_inherited(c->db);
  }
  esg__free(c->path);
  esg__free(c);
}
