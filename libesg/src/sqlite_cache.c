/* SQLite backend: the cache feature (placeholder: being written). */
#include "sqlite_int.h"
#include "cache_be.h"

const char esg__sq_cache_schema[] = "SELECT 1;";
const struct esg__cache_ops esg__sq_cache_ops = {0};
