/*
 * libesg: the data parts of External Service Gateways.
 *
 * This umbrella header is the whole public C API; include only this one.
 * Conventions (see docs/c-api.md):
 *   - every function returns an int status from the list in esg/common.h
 *     (ESG_OK is 0; outcomes such as ESG_DUPLICATE are positive values, errors
 *     are negative), and esg_errmsg() on the handle gives the detail text;
 *   - handles are opaque, opened with esg_X_open() and freed with esg_X_close(),
 *     which accepts NULL;
 *   - times are int64 epoch milliseconds; durations are milliseconds.
 */
#ifndef ESG_H
#define ESG_H

#include "esg/common.h"
#include "esg/event.h"
#include "esg/store.h"
#include "esg/webhook.h"
#include "esg/cache.h"
#include "esg/latch.h"
#include "esg/resync.h"
#include "esg/egress.h"
#include "esg/gateway.h"
#include "esg/ingress.h"

#endif
