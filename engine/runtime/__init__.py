"""The Kafka side of the engine: clients, the transactional step loop, process supervision."""
