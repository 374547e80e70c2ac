/*
 * What the fuzz targets share (tests/README.md "Fuzzing"). Each fuzz_<name>.c defines
 * LLVMFuzzerTestOneInput; it is linked with libFuzzer in the fuzz build (ESG_FUZZ, clang)
 * and with replay.c, which feeds it the corpus and the regression inputs, in every build.
 * A broken invariant aborts, which libFuzzer reports as a crash with the input.
 */
#ifndef ESG_FUZZ_H
#define ESG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      abort();                                                                           \
    }                                                                                    \
  } while (0)

/* As FUZZ_CHECK, with the status code and esg_errmsg(h) in the report. */
#define FUZZ_CHECK_RC(cond, rc, h)                                                           \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "fuzz invariant failed: %s (%s:%d): rc %d %s: %s\n", #cond, __FILE__, \
              __LINE__, (int)(rc), esg_status_name(rc), esg_errmsg(h));                      \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

#endif
