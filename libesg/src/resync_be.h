/* Backend operations of the resync feature (placeholder: being written). */
#ifndef ESG_RESYNC_BE_H
#define ESG_RESYNC_BE_H
#include "backend.h"
struct esg__resync_ops {
  int placeholder;
};
#endif
