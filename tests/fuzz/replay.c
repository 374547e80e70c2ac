/*
 * Replays inputs through a fuzz target without libFuzzer: each argument is a file or a
 * directory whose files (not those starting with '.', nor README*) run in name order.
 * A missing directory counts as empty (regressions/<target> exists only once there is
 * one). What ctest runs on the corpus and the regressions in every build.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz.h"

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      fprintf(stderr, "replay: out of memory reading %s\n", path);
      fclose(f);
      return -1;
    }
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    uint8_t *b = realloc(buf, cap *= 2);
    if (!b) free(buf);
    buf = b;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    fprintf(stderr, "replay: error reading %s\n", path);
    free(buf);
    return -1;
  }
  /* a copy of exactly the input's size, so ASan sees a read past its end */
  uint8_t *in = malloc(n ? n : 1);
  if (!in) {
    free(buf);
    return -1;
  }
  memcpy(in, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(in, n);
  free(in);
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_dir(const char *dir, int *count) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : (fprintf(stderr, "replay: cannot open %s: %s\n", dir, strerror(errno)), -1);
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || strncmp(de->d_name, "README", 6) == 0) continue;
    if (n == cap) {
      char **b = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
      if (!b) break;
      names = b;
    }
    names[n++] = strdup(de->d_name);
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, by_name);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
      if (run_file(path) != 0) rc = -1;
      else (*count)++;
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  int count = 0, rc = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      if (run_dir(argv[i], &count) != 0) rc = 1;
    } else if (stat(argv[i], &st) == 0) {
      if (run_file(argv[i]) != 0) rc = 1;
      else count++;
    } else if (errno != ENOENT) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      rc = 1;
    }
  }
  printf("replayed %d input(s)\n", count);
  if (count == 0) {
    fprintf(stderr, "replay: no input found (is the corpus there?)\n");
    return 1;
  }
  return rc;
}
