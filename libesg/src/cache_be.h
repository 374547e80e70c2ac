/* Backend operations of the cache feature (placeholder: being written). */
#ifndef ESG_CACHE_BE_H
#define ESG_CACHE_BE_H
#include "backend.h"
struct esg__cache_ops {
  int placeholder;
};
#endif
