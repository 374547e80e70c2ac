/* The resync feature (placeholder: being written). */
#ifndef ESG_RESYNC_H
#define ESG_RESYNC_H
#include "esg/store.h"
#endif
