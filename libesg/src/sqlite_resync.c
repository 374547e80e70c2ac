/* SQLite backend: the resync feature (placeholder: being written). */
#include "sqlite_int.h"
#include "resync_be.h"

const char esg__sq_resync_schema[] = "SELECT 1;";
const struct esg__resync_ops esg__sq_resync_ops = {0};
