/* SQLite backend: the latch feature (placeholder: being written). */
#include "sqlite_int.h"
#include "latch_be.h"

const char esg__sq_latch_schema[] = "SELECT 1;";
const struct esg__latch_ops esg__sq_latch_ops = {0};
