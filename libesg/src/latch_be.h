/* Backend operations of the latch feature (placeholder: being written). */
#ifndef ESG_LATCH_BE_H
#define ESG_LATCH_BE_H
#include "backend.h"
struct esg__latch_ops {
  int placeholder;
};
#endif
