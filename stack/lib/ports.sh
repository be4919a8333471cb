# shellcheck shell=bash disable=SC2034 # variables here are used by the modules that source this file
# Every TCP port the local stack listens on, in one place. Sourced by common.sh; read by
# tests/test_stack_ports.py, which fails if one of them (or a SeaweedFS gRPC port) lies in
# the kernel's ephemeral range.
#
# Why that range is out of bounds: Linux takes the local port of every outbound connection
# from net.ipv4.ip_local_port_range (32768-60999 by default). A server port inside it can be
# held, at the very moment the server starts, by any client socket of a test running in
# parallel, and the server fails with "Address already in use" (seen: the 3-node cluster's
# node 3 on 39092). Ports below 32768 are never handed out that way.
#
# SeaweedFS derives a gRPC port from each of its HTTP ports: HTTP port + 10000. Those must
# stay below 32768 too, so no SeaweedFS HTTP port here may be 22768 or above.

# Single-node Kafka: broker, controller.
KAFKA_PORT=9092
KAFKA_CTL_PORT=9093
# The 3-node cluster (failure tests): node N listens on 2N092, its controller on 2N093.
KAFKA3_PORTS=(21092 22092 23092)
KAFKA3_CTL_PORTS=(21093 22093 23093)
# Defaults of the modules below; STACK_*_PORT overrides start second, private instances
# (chaos/services.py picks theirs, under the same rule).
PG_DEFAULT_PORT=5433
S3_DEFAULT_PORT=8333
# weed mini's master, volume, filer and admin (maintenance worker) HTTP ports.
S3_DEFAULT_INTERNAL_PORTS="9333 9340 8888 9646"
AZ_DEFAULT_PORT=10000
# The SASL_SSL single node (stack/kafka-secure.sh: transport tests), beside the shared one:
# SCRAM-SHA-512 over TLS on the broker port, its controller on plaintext loopback.
KAFKA_SECURE_PORT=19094
KAFKA_SECURE_CTL_PORT=19095
# The schema registry (Apicurio Registry 3.x, stack/lib/registry.sh): HTTP API (the
# Confluent-compatible one at /apis/ccompat/v7) and Quarkus's management interface
# (health, metrics), both pinned to loopback.
REGISTRY_DEFAULT_PORT=8085
REGISTRY_DEFAULT_MGMT_PORT=9085
