"""Kept for imports that predate ``engine.runtime.calls``, where call runners now live."""

from engine.runtime.calls import CallRunner, HttpCallRunner

__all__ = ["CallRunner", "HttpCallRunner"]
