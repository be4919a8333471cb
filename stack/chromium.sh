#!/usr/bin/env bash
# Install what the browser tests need if it is missing (idempotent): Debian's Chromium and
# axe-core (npm ci from stack/axe/).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=stack/lib/chromium.sh
source "$STACK_SRC/lib/chromium.sh"
ensure_chromium
ensure_axe
