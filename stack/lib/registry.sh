# shellcheck shell=bash
# Schema registry: Apicurio Registry 3.3.3 (a Quarkus app) run straight from its Maven
# Central tarball, io.apicurio:apicurio-registry-app:3.3.3:tar.gz:all, unpacked into
# .stack/registry/app. Sourced by up/down/status.sh.
#
#   HTTP API        127.0.0.1:8085  (Confluent-compatible API: /apis/ccompat/v7)
#   management      127.0.0.1:9085  (/q/health; Quarkus binds it to every interface
#                                    unless told otherwise, so it is pinned here)
#   storage         in memory (Apicurio's default H2 in-memory SQL): schemas are gone when
#                   it stops, and every leadflow process registers its schema again at start
#                   (registration is idempotent: same schema, same id)
#
# It needs Java 21+, the machine's default java may be 17 (Kafka's): REGISTRY_JAVA_HOME,
# else JAVA_HOME if it is 21+, else the Temurin 25 JDK this machine kind carries.

REGISTRY_VERSION=3.3.3
REGISTRY_ARTIFACT="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all"
REGISTRY_PORT=${STACK_REGISTRY_PORT:-$REGISTRY_DEFAULT_PORT}
REGISTRY_MGMT_PORT=${STACK_REGISTRY_MGMT_PORT:-$REGISTRY_DEFAULT_MGMT_PORT}
REGISTRY_DIR="$STACK_DIR/registry"
REGISTRY_APP="$REGISTRY_DIR/app"
REGISTRY_LOG="$LOG_DIR/registry.log"
REGISTRY_PIDFILE="$REGISTRY_DIR/registry.pid"
REGISTRY_MARKER="$REGISTRY_APP/quarkus-run.jar"
REGISTRY_START_TIMEOUT=${REGISTRY_START_TIMEOUT:-90}
REGISTRY_URL="http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"

# registry_java: the java binary of a JDK 21+ (prints nothing if there is none).
registry_java() {
  local home v
  for home in "${REGISTRY_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-21-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
    [[ -n $home && -x $home/bin/java ]] || continue
    v=$("$home/bin/java" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
    if [[ ${v%%.*} -ge 21 ]] 2>/dev/null; then
      echo "$home/bin/java"
      return 0
    fi
  done
}

# Unpack the tarball from ~/.m2 (fetched by `mvn dependency:get` the first time) unless
# the unpacked app is already this version.
ensure_registry_app() {
  local stamp="$REGISTRY_DIR/app.stamp" tarball
  if [[ -f $REGISTRY_MARKER ]] && stamp_ok "$stamp" "$REGISTRY_ARTIFACT"; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
  ensure_dirs
  tarball="$HOME/.m2/repository/io/apicurio/apicurio-registry-app/$REGISTRY_VERSION/apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz"
  if [[ ! -f $tarball ]]; then
    log "registry: fetching $REGISTRY_ARTIFACT from Maven Central (first run only, ~160 MB)"
    # -Dtransitive=false: the tarball is self-contained; its POM names build-time modules
    # that are not all on Maven Central.
    mvn -B -q dependency:get -Dtransitive=false -Dartifact="$REGISTRY_ARTIFACT" \
      >"$LOG_DIR/registry-mvn.log" 2>&1 || fail_with_log "mvn dependency:get $REGISTRY_ARTIFACT failed" "$LOG_DIR/registry-mvn.log"
  fi
  rm -rf "$REGISTRY_APP" "$stamp"
  mkdir -p "$REGISTRY_APP"
  tar -xzf "$tarball" -C "$REGISTRY_APP" || die "registry: could not unpack $tarball"
  echo "$REGISTRY_ARTIFACT" >"$stamp"
}

registry_alive() { pid_alive "$REGISTRY_PIDFILE" "$REGISTRY_MARKER"; }
registry_http_ok() {
  port_open "$REGISTRY_PORT" && [[ $(curl -s -o /dev/null -m 3 -w '%{http_code}' "$REGISTRY_URL/subjects" 2>/dev/null) == 200 ]]
}

up_registry() {
  ensure_dirs
  ensure_registry_app
  if registry_alive && registry_http_ok; then
    ok "registry: already running on $REGISTRY_URL"
    return 0
  fi
  local java t0=$SECONDS
  java=$(registry_java)
  [[ -n $java ]] || die "registry: Apicurio Registry $REGISTRY_VERSION needs Java 21+; set REGISTRY_JAVA_HOME (found none in JAVA_HOME or /usr/lib/jvm)"
  if ! registry_alive; then
    local p
    for p in "$REGISTRY_PORT" "$REGISTRY_MGMT_PORT"; do
      port_open "$p" && die "registry: port $p is already in use by another process $(port_owner "$p")"
    done
    log "registry: starting Apicurio Registry $REGISTRY_VERSION (in-memory) on $HOST:$REGISTRY_PORT"
    # -Xmx: the in-memory store holds a handful of schemas. The management interface is
    # pinned to loopback like everything else (Quarkus's default host is 0.0.0.0).
    spawn "$REGISTRY_PIDFILE" "$REGISTRY_LOG" \
      "$java" -Xms64m -Xmx384m -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1 \
      -Djava.net.preferIPv4Stack=true \
      -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dquarkus.management.host="$HOST" -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
      -Dapicurio.storage.kind=sql -Dapicurio.storage.sql.kind=h2 \
      -jar "$REGISTRY_MARKER"
  fi
  local rc=0
  wait_until "$REGISTRY_START_TIMEOUT" "$REGISTRY_PIDFILE" "$REGISTRY_MARKER" registry_http_ok || rc=$?
  ((rc == 0)) || fail_with_log "registry: no answer on $REGISTRY_URL (rc=$rc: 1 = java exited, 2 = timeout ${REGISTRY_START_TIMEOUT}s)" "$REGISTRY_LOG"
  ok "registry: ready in $((SECONDS - t0))s, $REGISTRY_URL"
}

down_registry() {
  if registry_alive; then
    log "registry: stopping"
    stop_pid "$REGISTRY_PIDFILE" "$REGISTRY_MARKER" registry 30
    ok "registry: stopped"
  else
    rm -f "$REGISTRY_PIDFILE"
    log "registry: not running"
  fi
}

status_registry() {
  if registry_alive; then
    if registry_http_ok; then
      status_line registry up "$REGISTRY_URL (pid $(<"$REGISTRY_PIDFILE"))"
    else
      status_line registry UNHEALTHY "pid $(<"$REGISTRY_PIDFILE") runs but $REGISTRY_URL does not answer"
      return 1
    fi
  else
    status_line registry down
    return 1
  fi
}
