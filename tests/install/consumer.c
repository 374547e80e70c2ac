/* A program built against an installed libesg: proves the headers, CMake package and esg.pc. */
#include <esg.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  if (esg_version_number() != ESG_VERSION_NUMBER) return 1;
  esg_store *s = NULL;
  if (esg_store_open(&s, ":memory:", NULL) != ESG_OK) return 2;
  int rc = esg_claim(s, "k", NULL, 0, 1000, 1000, NULL);
  esg_store_close(s);
  printf("consumer: libesg %s, claim %s\n", esg_version(), esg_status_name(rc));
  return rc == ESG_NEW ? 0 : 3;
}
