#!/usr/bin/env bash
# The demo (make demo): the egress example end to end. Internal events go through
# a Lua gateway (idempotence, enrichment from the cache, transform) to a mock CRM
# over HTTP (libesg's egress engine: retries, faults), on a fresh store; then
# the same events again, every one recognised as a duplicate. Both summaries
# are printed. Usage: examples/demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/crm/run.sh" "${1:-build}"
