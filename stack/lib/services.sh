# shellcheck shell=bash
# Loads every service module and parses the common command line of
# up.sh / down.sh / status.sh:  [SERVICE...] [--nodes 1|3]
#
# Services: kafka postgres s3 azure (alias: azurite) registry, and kafka3 = the 3-node
# Kafka cluster. "kafka" means kafka3 when KAFKA_NODES=3 or --nodes 3 is given.

# shellcheck source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=stack/lib/kafka.sh
source "$STACK_SRC/lib/kafka.sh"
# shellcheck source=stack/lib/postgres.sh
source "$STACK_SRC/lib/postgres.sh"
# shellcheck source=stack/lib/s3.sh
source "$STACK_SRC/lib/s3.sh"
# shellcheck source=stack/lib/azurite.sh
source "$STACK_SRC/lib/azurite.sh"
# shellcheck source=stack/lib/registry.sh
source "$STACK_SRC/lib/registry.sh"

# parse_services DEFAULT... -- ARGS...: sets the global array SERVICES.
parse_services() {
  local defaults=() nodes=${KAFKA_NODES:-1} s
  while [[ $# -gt 0 && $1 != -- ]]; do defaults+=("$1"); shift; done
  shift # --
  SERVICES=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      -h | --help) usage; exit 0 ;;
      kafka | kafka3 | postgres | s3 | registry) SERVICES+=("$1"); shift ;;
      azure | azurite) SERVICES+=(azure); shift ;;
      *) usage >&2; die "unknown service or option: $1" ;;
    esac
  done
  [[ $nodes == 1 || $nodes == 3 ]] || die "--nodes / KAFKA_NODES must be 1 or 3 (got $nodes)"
  ((${#SERVICES[@]})) || SERVICES=("${defaults[@]}")
  if [[ $nodes == 3 ]]; then
    for s in "${!SERVICES[@]}"; do [[ ${SERVICES[$s]} == kafka ]] && SERVICES[s]=kafka3; done
  fi
  # drop duplicates, keep order
  local seen=" " out=()
  for s in "${SERVICES[@]}"; do [[ $seen == *" $s "* ]] || { out+=("$s"); seen+="$s "; }; done
  SERVICES=("${out[@]}")
}

# Serialise concurrent up/down runs (e.g. several test workers calling up.sh).
take_lock() {
  ensure_dirs
  # fd 9 is closed again for every server we start (spawn, pg_ctl): a server
  # inheriting it would hold the lock for its whole life.
  exec 9>"$STACK_DIR/.lock"
  if ! flock -n 9; then
    log "waiting for another stack/up.sh or down.sh to finish (lock $STACK_DIR/.lock)"
    flock -w 600 9 || die "lock $STACK_DIR/.lock still held after 600s: $(lsof -t "$STACK_DIR/.lock" 2>/dev/null | tr '\n' ' ')"
  fi
}
