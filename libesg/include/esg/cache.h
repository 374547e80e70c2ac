/* The cache feature (placeholder: being written). */
#ifndef ESG_CACHE_H
#define ESG_CACHE_H
#include "esg/store.h"
#endif
