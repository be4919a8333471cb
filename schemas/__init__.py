"""Avro schemas of leadflow's events and the codec that frames them on Kafka."""

from schemas.codec import EventCodec, SchemaMismatchError, UnknownSchemaIdError, event_to_json_dict

__all__ = ["EventCodec", "SchemaMismatchError", "UnknownSchemaIdError", "event_to_json_dict"]
