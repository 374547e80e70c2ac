/* The shared part of the C test harness; see testutil.h. */
#include "testutil.h"
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int tu_failures;
int tu_checks;

int tu_done(void) {
  printf("%d passed, %d failed\n", tu_checks - tu_failures, tu_failures);
  return tu_failures ? 1 : 0;
}

int64_t tu_clock(void *ud) { return *(int64_t *)ud; }

const char *tu_path(const char *name) {
  static char path[4096];
  const char *dir = getenv("ESG_TEST_TMP");
  if (!dir) dir = "/tmp/esg-test";
  mkdir(dir, 0777);
  snprintf(path, sizeof path, "%s/%d-%s", dir, (int)getpid(), name);
  const char *suffixes[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    char p[4200];
    snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
    unlink(p);
  }
  return path;
}

esg_store *tu_open(const char *path, int64_t *now) {
  esg_store_opts o = {0};
  o.clock = tu_clock;
  o.clock_ud = now;
  esg_store *s = NULL;
  int rc = esg_store_open(&s, path, &o);
  if (rc != ESG_OK) {
    fprintf(stderr, "esg_store_open(%s): %s: %s\n", path, esg_status_name(rc), esg_errmsg(NULL));
    exit(2);
  }
  return s;
}

static struct rlimit growth;

int tu_no_file_growth(void) {
  if (getrlimit(RLIMIT_FSIZE, &growth) != 0) return -1;
  struct rlimit none = growth;
  none.rlim_cur = 0;
  signal(SIGXFSZ, SIG_IGN);
  return setrlimit(RLIMIT_FSIZE, &none);
}

void tu_file_growth(void) { setrlimit(RLIMIT_FSIZE, &growth); }
