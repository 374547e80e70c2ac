/* The latch feature (placeholder: being written). */
#ifndef ESG_LATCH_H
#define ESG_LATCH_H
#include "esg/store.h"
#endif
