#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests if it is missing (idempotent).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=stack/lib/chromium.sh
source "$STACK_SRC/lib/chromium.sh"
ensure_chromium
