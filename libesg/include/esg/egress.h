/* HTTP egress (placeholder: being written). */
#ifndef ESG_EGRESS_H
#define ESG_EGRESS_H
#include "esg/store.h"
#endif
