"""An in-memory ObjectStore with the real stores' create-only semantics, for pure-logic tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, BinaryIO

from engine.objects.contract import PutResult
from engine.objects.errors import DestinationError, ObjectNotFoundError


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, dict[str, str]] = {}
        self.failing = False  # every call raises, like a store that is down

    @property
    def name(self) -> str:
        return "memory:test/"

    def _check(self) -> None:
        if self.failing:
            raise DestinationError(self.name, "down")

    def put_if_absent(
        self,
        key: str,
        body: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> PutResult:
        self._check()
        if key in self.objects:
            return "exists"
        self.objects[key] = body
        if metadata:
            self.meta[key] = dict(metadata)
        return "created"

    def put_file_if_absent(
        self, key: str, file: IO[bytes], content_type: str, metadata: Mapping[str, str]
    ) -> PutResult:
        self._check()
        file.seek(0)
        if key in self.objects:
            return "exists"
        self.objects[key] = file.read()
        self.meta[key] = dict(metadata)
        return "created"

    def metadata(self, key: str) -> dict[str, str]:
        self._check()
        if key not in self.objects:
            raise ObjectNotFoundError(self.name, key)
        return dict(self.meta.get(key, {}))

    def get(self, key: str) -> bytes:
        self._check()
        if key not in self.objects:
            raise ObjectNotFoundError(self.name, key)
        return self.objects[key]

    def list_keys(self, prefix: str) -> list[str]:
        self._check()
        return sorted(k for k in self.objects if k.startswith(prefix))

    def upload_file(self, key: str, file: BinaryIO, content_type: str) -> None:
        self.objects[key] = file.read()

    def read_chunks(self, key: str) -> Iterator[bytes]:
        return iter([self.get(key)])

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def close(self) -> None:
        return
