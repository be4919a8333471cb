"""Process settings, read from the environment.

Variables take the ecosystem's usual names where one exists
(``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``, ``AZURE_STORAGE_CONNECTION_STRING``,
``AWS_*``) and the ``LEADFLOW_`` prefix otherwise. Defaults point at the local
stack that ``make up`` starts (see ``stack/README.md``).
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str, *others: str) -> AliasChoices:
    return AliasChoices(f"LEADFLOW_{name}", *others)


# A key's scopes (engine.access.scopes): events:read, pii:read, exports, stats, flows:admin,
# intake:<source>|intake:*, feedback:<recipient>|feedback:*; "read" and "pii" are the UI
# keys' older names (read = events:read, stats, exports; pii = pii:read).
SCOPE_PATTERN = (
    r"^(read|pii|events:read|pii:read|exports|stats|flows:admin"
    r"|intake:(\*|[A-Za-z0-9_.-]{1,64})|feedback:(\*|[A-Za-z0-9_.-]{1,64}))$"
)
UiScope = Annotated[str, Field(pattern=SCOPE_PATTERN)]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
PostgresSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class UiKey(BaseModel):
    """An API key configured by reference (``LEADFLOW_API_KEYS``, or the operator UI's older
    ``LEADFLOW_UI_KEYS``): the settings name where the key lives (an environment variable or
    a file holding the key or ``sha256:<hex>``), never the key. Keys made by
    ``leadflow keys create`` live in Postgres instead (``engine.access``); both kinds carry
    the same scopes and optional flow restriction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    key_file: Path | None = None
    scopes: tuple[UiScope, ...] = ("read",)
    # None: every flow; else only these flows' leads, events, exports and stats.
    flows: tuple[str, ...] | None = None
    # Requests per minute; None: the deployment's api_rate_per_minute.
    rate_per_minute: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_place(self) -> UiKey:
        if (self.key_env is None) == (self.key_file is None):
            raise ValueError("a UI key needs exactly one of key_env or key_file")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    database_url: SecretStr = Field(
        SecretStr("postgresql://leadflow:leadflow@127.0.0.1:5433/leadflow"),
        validation_alias=_env("DATABASE_URL", "DATABASE_URL"),
    )
    s3_endpoint_url: str | None = Field(
        "http://127.0.0.1:8333", validation_alias=_env("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    )
    aws_region: str = Field("us-east-1", validation_alias=_env("AWS_REGION", "AWS_DEFAULT_REGION"))
    # The local SeaweedFS credentials; production sets the AWS variables (or
    # leaves both empty to use boto3's own credential chain).
    aws_access_key_id: str | None = Field(
        "leadflow", validation_alias=_env("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr | None = Field(
        SecretStr("leadflow-local-secret"),
        validation_alias=_env("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    azure_storage_connection_string: SecretStr = Field(
        SecretStr("UseDevelopmentStorage=true"),
        validation_alias=_env("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_CONNECTION_STRING"),
    )

    # How events are framed on Kafka (schemas.codec; README "Event encodings"): Avro
    # single-object encoding (0xC3 0x01 + the schema's fingerprint), which needs no
    # registry, or the Confluent wire format (0x00 + the 4-byte schema id the registry
    # gave the schema under "<topic>-value"), which Connect, ksqlDB, Flink and
    # confluent-kafka's AvroDeserializer read. Readers take both, whatever this says.
    event_encoding: Literal["single-object", "registry"] = "single-object"
    # A Confluent-compatible registry API (Apicurio's ccompat, stack/lib/registry.sh).
    schema_registry_url: str = "http://127.0.0.1:8085/apis/ccompat/v7"
    # Registry down at start: the step waits this long between tries, logging each.
    schema_registry_retry_s: float = Field(2.0, gt=0)

    db_schema: str = "leadflow"
    # The projector reads every flow's events by default; tests narrow it to one flow.
    projector_name: str = "timeline"
    projector_pattern: str = r"^leadflow\..+\.events\..+$"
    # 0: off. Serves the streamer role's metrics at http://127.0.0.1:PORT/metrics (one
    # streamer process per port: registry deployments run one per flow).
    streamer_metrics_port: int = 0
    # 0: off. `leadflow run` serves every role's worker metrics (records, batches,
    # commits, aborts, dead letters, lag; engine.runtime.kafka.metrics) at
    # http://127.0.0.1:PORT/metrics, summed over its role processes.
    metrics_port: int = Field(0, ge=0, le=65535)
    # Where `leadflow calls status` and the UI read the calling workers' breakers, calls
    # in flight and latency: `leadflow run` expositions, comma-separated (one per host).
    # Empty: this host's `leadflow run`, at LEADFLOW_METRICS_PORT.
    calls_metrics_urls: str = ""
    # A filter right after another event-reading step decides in that step's worker, in
    # its transaction (engine.runtime.handlers.base: EventInputHandler.successor): one
    # topic hop and one commit fewer per lead. Off: every step in its own worker.
    fuse_pure_steps: bool = True
    s3_bucket: str = "leadflow-events"
    azure_container: str = "leadflow-events"
    # Where export jobs write their files (projectors.exports), with the S3 or
    # Azure credentials above; the defaults are the local stack's bucket.
    export_store_kind: Literal["s3", "azure_blob"] = "s3"
    export_bucket: str = "leadflow-events"
    export_prefix: str = "exports/"
    # Run the export worker as a thread of every API process (leadflow serve);
    # False when `leadflow exports work` runs it as its own process.
    export_worker_in_api: bool = True
    # The folder scheduled exports with a `local` destination write under (their
    # path is relative to it); None: such schedules fail with a message saying so.
    export_local_dir: Path | None = None

    # LEADFLOW_UI_KEYS, JSON: [{"name": "ops", "key_env": "OPS_UI_KEY", "scopes": ["read", "pii"]}].
    # The default is the local stack's key file, which `leadflow demo` creates.
    ui_keys: tuple[UiKey, ...] = (
        UiKey(name="local", key_file=Path(".stack/ui.key"), scopes=("read", "pii")),
    )
    # LEADFLOW_API_KEYS: more keys by reference, in the same shape; most deployments use
    # `leadflow keys create` (hashed in Postgres) instead.
    api_keys: tuple[UiKey, ...] = ()
    # The keyed hash's secret for keys stored in Postgres (HMAC-SHA256): a stolen table
    # alone cannot confirm a guessed key. Set it in production; changing it voids every key.
    api_key_pepper: SecretStr = SecretStr("leadflow-local-pepper")
    # How long a looked-up key is trusted before Postgres is asked again: a revoked key
    # stops working within this many seconds, without a restart.
    api_key_cache_seconds: float = Field(5.0, ge=0)
    # Per key, unless the key says otherwise; a token bucket of this size refilled per minute.
    api_rate_per_minute: int = Field(600, ge=1)
    # Proxies (addresses or CIDR ranges) whose X-Forwarded-For is believed when recording a
    # lead's client_ip (engine.intake.client_ip); JSON, e.g. '["10.0.0.0/8"]'. Default:
    # none, so the client is the connection's peer and the header is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Failed authentications per client address per minute before 429s.
    auth_failures_per_minute: int = Field(30, ge=1)
    # /metrics answers without a key unless this is true.
    metrics_need_key: bool = False
    # Every body a route takes (intake has its own per-source max_body_bytes).
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # statement_timeout on every public query of the API.
    api_statement_timeout_ms: int = Field(15_000, ge=100)
    # Connections the API keeps to Postgres per process (a request waits up to 5 s for one).
    api_pool_size: int = Field(10, ge=1, le=1000)
    # The longest start..end a query may span, in days.
    max_query_days: int = Field(366, ge=1)
    # A buyer's feedback key may report on its deliveries for this many days after them.
    feedback_return_days: int = Field(30, ge=1)
    # Export jobs a key may have created or processing at once.
    max_export_jobs_per_key: int = Field(3, ge=1)
    # The master key that wraps each lead's data key (engine.sealing): 32 bytes, base64
    # (LEADFLOW_MASTER_KEY) or a file holding that text (LEADFLOW_MASTER_KEY_FILE). Needed
    # by every process of a flow that declares sensitive fields; never logged.
    master_key: SecretStr | None = None
    master_key_file: Path | None = None

    # Buyers' feedback for this deployment (rejected feedback: "<topic>.rejected"); the
    # topic also names the feedback worker's group. Two deployments sharing a cluster
    # (or tests sharing a stack) each need their own: a worker rejects feedback on
    # events its own database does not hold.
    feedback_topic: str = Field("leadflow.feedback", pattern=r"^[A-Za-z0-9._-]{1,200}$")

    flow_file: Path = Path("flows/demo.yaml")
    topic_partitions: int = 3
    topic_replication: int = 1

    batch_size: int = 500
    commit_interval_ms: int = 100
    # A drained step still keeps its transaction open this long, so a quiet flow hands
    # each lead on at once while a busy one does not cascade into a transaction per
    # handful of records (each costs the broker a marker per partition and an offset commit).
    commit_linger_ms: int = 10
    transaction_timeout_ms: int = 10_000
    # On stop, how long a calling step's worker still writes answers that come in; what is still
    # out then runs again under the next owner (the buyer sees it twice, same idempotency key).
    step_stop_grace_ms: int = Field(5_000, ge=0)
    instance_id: str = Field(default_factory=socket.gethostname)

    # Calls to buyers and services (engine.runtime.calls): at most this many in flight
    # per process (beyond, a call waits for a slot inside the runner), answers read up
    # to this many bytes (then cut, as an error answer), and a destination's breaker
    # opens after this many errors in a row (0: no breaker) for the cool-down.
    call_max_in_flight: int = Field(256, ge=1, le=100_000)
    call_max_response_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)
    call_breaker_failures: int = Field(0, ge=0, le=10_000)
    call_breaker_cool_down_ms: int = Field(30_000, ge=100, le=3_600_000)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    # Transport security (engine.transport checks them, in one line, before anything connects).
    # Kafka, with librdkafka's own names: every client the Kafka kit builds gets them.
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    # The password by reference only (like an intake key): an environment variable's name or
    # a file's path, read when a client is built; the settings never hold it.
    kafka_sasl_password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    kafka_sasl_password_file: Path | None = None
    # PLAIN sends the password as it is: refused without TLS unless this says it is wanted.
    kafka_allow_plain_without_tls: bool = False
    kafka_ssl_ca_location: Path | None = None  # PEM; none: the system's CA store
    kafka_ssl_certificate_location: Path | None = None  # client certificate (PEM), with the key
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_verify_hostname: bool = True
    # Postgres, libpq's names: added to every connection the engine opens, over what
    # DATABASE_URL says (unset: the URL's own parameters, or libpq's PGSSL* variables, apply).
    db_sslmode: PostgresSslMode | None = None
    db_sslrootcert: Path | None = None
    db_sslcert: Path | None = None
    db_sslkey: Path | None = None
    # HTTPS for `leadflow serve` (both or neither; --tls-cert/--tls-key override them).
    serve_tls_cert: Path | None = None
    serve_tls_key: Path | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry.strip(), strict=False)  # ValueError names the entry
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        # librdkafka takes "sasl_ssl" as well as "SASL_SSL": so do these settings.
        return value.upper() if isinstance(value, str) else value


@cache
def get_settings() -> Settings:
    return Settings()
