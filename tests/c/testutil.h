/*
 * A minimal test harness for the C tests: CHECK macros that report the failing
 * expression and keep going, a fake clock, and fresh temporary store paths.
 */
#ifndef ESG_TESTUTIL_H
#define ESG_TESTUTIL_H

#include <stdio.h>
#include <string.h>
#include "esg.h"

extern int tu_failures;
extern int tu_checks;

#define CHECK(cond)                                                                   \
  do {                                                                                \
    tu_checks++;                                                                      \
    if (!(cond)) {                                                                    \
      tu_failures++;                                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
    }                                                                                 \
  } while (0)

/* Checks that a call returns the expected status, printing both names and the detail. */
#define CHECK_RC(expected, call)                                                      \
  do {                                                                                \
    int tu_rc_ = (call);                                                              \
    tu_checks++;                                                                      \
    if (tu_rc_ != (expected)) {                                                       \
      tu_failures++;                                                                  \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__,     \
              #call, esg_status_name(tu_rc_), esg_status_name(expected));             \
    }                                                                                 \
  } while (0)

#define CHECK_STR(a, b) CHECK((a) != NULL && (b) != NULL && strcmp((a), (b)) == 0)
#define CHECK_CONTAINS(hay, needle) CHECK((hay) != NULL && strstr((hay), (needle)) != NULL)

/* Runs one test function, printing its name. */
#define RUN(fn)                                                                       \
  do {                                                                                \
    int before_ = tu_failures;                                                        \
    fn();                                                                             \
    fprintf(stderr, "%s %s\n", tu_failures == before_ ? "ok  " : "FAIL", #fn);       \
  } while (0)

/* Prints the summary and returns the process exit code. */
int tu_done(void);

/* A fake clock the tests move by hand; pass tu_clock / &tu_now as clock and clock_ud. */
int64_t tu_clock(void *ud);

/* A fresh path for a store file in the test's temporary folder (removes old files). */
const char *tu_path(const char *name);

/* Opens a store at path with the fake clock at *now; aborts the test on failure. */
esg_store *tu_open(const char *path, int64_t *now);

/* Until tu_file_growth(), this process may not grow any file (RLIMIT_FSIZE 0, SIGXFSZ
   ignored), so a commit that must append to the log fails for real: for a forked child.
   0 on success. */
int tu_no_file_growth(void);
void tu_file_growth(void);

#endif
