/*
 * The fork() count behind every handle's process check (see esg__forks). The
 * child handler runs in the child alone, before any thread of its own exists, so
 * a plain counter needs no atomics.
 */
#include <pthread.h>
#include "core/internal.h"

unsigned esg__forks;
static pthread_once_t forks_once = PTHREAD_ONCE_INIT;
static void count_fork(void) { esg__forks++; }
static void watch(void) { pthread_atfork(NULL, NULL, count_fork); }
void esg__watch_forks(void) { pthread_once(&forks_once, watch); }
