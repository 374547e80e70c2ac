/*
 * A minimal test harness for the C tests: CHECK macros that report the failing
 * expression and keep going, a fake clock, fresh temporary stores, and the loop
 * that makes the store layer's contract tests one conformance suite.
 *
 * The conformance suite. A test binary's main runs its contract tests inside
 * TU_SUITE { RUN(...); ... }: once per entry of ESG_TEST_STORES (entries
 * separated by spaces; default "sqlite :memory:"), printing "== store <entry>"
 * before each run; failures name the store. Entries:
 *   sqlite          a fresh SQLite file per store name: sqlite:$ESG_TEST_TMP/<pid>-<name>
 *   path            the same file, named by its plain path (no scheme)
 *   :memory:        a private in-memory store: every open is a new, empty database
 *   SCHEME://...    a server database (postgres://host/db, options allowed): each store
 *                   name is a fresh schema, the URI plus schema=esg_<pid>_<name>; the
 *                   backend's hook in testutil.c (fresh_schema) drops and creates it
 * In a test, tu_store(name) is a fresh URI of the store under test, naming one
 * database until the next tu_store(name): open it as often as the test needs.
 * What not every store gives is asked for, and skipped where absent with a line
 * "skip <test> on <store>: <reason>": several handles or processes on one
 * database, or a reopen that sees earlier data (tu_store_shared(): false for
 * :memory:). Tests of the SQLite backend itself (WAL, checkpoints, raw sqlite3
 * access, RLIMIT_FSIZE on the file, fork of a WAL connection) stay in
 * TU_SQLITE { ... }, run once per binary on files named by tu_path(), whatever
 * the list says. A new backend proves itself by passing TU_SUITE unchanged.
 */
#ifndef ESG_TESTUTIL_H
#define ESG_TESTUTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "esg.h"

extern int tu_failures;
extern int tu_checks;

/* "[store <entry>] " inside TU_SUITE or TU_SQLITE, else "": the prefix of a failure. */
const char *tu_where(void);

#define CHECK(cond)                                                                   \
  do {                                                                                \
    tu_checks++;                                                                      \
    if (!(cond)) {                                                                    \
      tu_failures++;                                                                  \
      fprintf(stderr, "%s:%d: %sCHECK failed: %s\n", __FILE__, __LINE__, tu_where(),  \
              #cond);                                                                 \
    }                                                                                 \
  } while (0)

/* Checks that a call returns the expected status, printing both names and the detail. */
#define CHECK_RC(expected, call)                                                      \
  do {                                                                                \
    int tu_rc_ = (call);                                                              \
    tu_checks++;                                                                      \
    if (tu_rc_ != (expected)) {                                                       \
      tu_failures++;                                                                  \
      fprintf(stderr, "%s:%d: %s%s returned %s, expected %s\n", __FILE__, __LINE__,   \
              tu_where(), #call, esg_status_name(tu_rc_), esg_status_name(expected)); \
    }                                                                                 \
  } while (0)

#define CHECK_STR(a, b) CHECK((a) != NULL && (b) != NULL && strcmp((a), (b)) == 0)
#define CHECK_CONTAINS(hay, needle) CHECK((hay) != NULL && strstr((hay), (needle)) != NULL)

/* Runs one test function, printing its name and "ok", "FAIL" (with the store) or its skip. */
void tu_test_begin(const char *name);
void tu_test_end(void);
#define RUN(fn)                                                                       \
  do {                                                                                \
    tu_test_begin(#fn);                                                               \
    fn();                                                                             \
    tu_test_end();                                                                    \
  } while (0)

/* Prints the summary (per store when a suite ran) and returns the process exit code. */
int tu_done(void);

/* A fake clock the tests move by hand; pass tu_clock / &tu_now as clock and clock_ud. */
int64_t tu_clock(void *ud);

/* --------------------------------------------------------- the suite -- */

/* The body runs once per entry of ESG_TEST_STORES, that entry being the store under test. */
#define TU_SUITE for (tu_suite_begin(); tu_suite_next();)
/* The body runs once, as the SQLite backend's own tests (files from tu_path(); tu_store()
   gives sqlite: URIs there). */
#define TU_SQLITE for (int tu_once_ = tu_sqlite_begin(); tu_once_; tu_once_ = tu_sqlite_end())
void tu_suite_begin(void);
int tu_suite_next(void);
int tu_sqlite_begin(void);
int tu_sqlite_end(void);

/* The entry under test ("sqlite", ":memory:", "postgres://..."); "sqlite" outside a suite. */
const char *tu_store_entry(void);

/* A fresh store URI for name on the store under test (old data of that name removed).
   Up to 8 results stay valid at once; copy one to keep it longer. */
const char *tu_store(const char *name);

/* Several handles and processes on one URI see one database, and a reopen sees what was
   written before: true for files and servers, false for :memory:. */
bool tu_store_shared(void);

/* The backend the store under test runs on ("sqlite" for sqlite, path and :memory:;
   "postgres" for postgres:// and postgresql://), as esg_store_backend names it. */
const char *tu_store_backend(void);
bool tu_store_is(const char *backend);

/* Skips the rest of the running test: prints "skip <test> on <store>: <reason>". */
void tu_skip(const char *reason);
/* Skips one part of the running test, which goes on: "skip <test> (<part>) on <store>: <reason>". */
void tu_skip_part(const char *part, const char *reason);
/* Returns from the test (a void function) with tu_skip(reason) unless cond holds. */
#define TU_REQUIRE(cond, reason)                                                      \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      tu_skip(reason);                                                                \
      return;                                                                         \
    }                                                                                 \
  } while (0)
/* Why a test needs tu_store_shared(). */
#define TU_NOT_SHARED "a private in-memory store is one handle's own"
#define TU_NOT_KEPT "a private in-memory store ends with its handle"

/* ------------------------------------------------------------- stores -- */

/* A fresh path for a store file in the test's temporary folder (removes old files):
   for tests that need a SQLite file as such. */
const char *tu_path(const char *name);

/* Opens the store at uri (a path or a URI) with the fake clock at *now; aborts the test
   on failure. */
esg_store *tu_open(const char *uri, int64_t *now);

/* A restart: closes s and opens uri again. Where a store does not outlive its handle
   (:memory:), s stays open instead, and the restart is reported as a skipped part. */
esg_store *tu_reopen(esg_store *s, const char *uri, int64_t *now);

/* Until tu_file_growth(), this process may not grow any file (RLIMIT_FSIZE 0, SIGXFSZ
   ignored), so a commit that must append to the log fails for real: for a forked child.
   0 on success. */
int tu_no_file_growth(void);
void tu_file_growth(void);

#endif
