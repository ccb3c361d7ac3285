#!/usr/bin/env bash
# Regenerates manifests/schemas/*.json from the API types.
set -euo pipefail
cd "$(dirname "$0")/.."
PHOENIX_UPDATE_SCHEMAS=1 cargo test -q -p phoenix-api --test schemas schemas_are_up_to_date
echo "schemas written to manifests/schemas/"
