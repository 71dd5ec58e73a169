"""parse: extract pages of text from the fetched bytes, in a child process with time and memory caps."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestion.errors import TransientError
from ingestion.model import JobStatus
from ingestion.sandbox import parse_document_file
from ingestion.services import Services
from ingestion.stages.common import StageRequest, advance, content_key, finished, read_json, version_key, write_json


@dataclass(frozen=True)
class ParseResult:
    parsed_key: str
    content_type: str
    title: str | None
    pages: int
    characters: int

    def to_payload(self) -> dict[str, Any]:
        return {
            "parsed_key": self.parsed_key,
            "content_type": self.content_type,
            "title": self.title,
            "pages": self.pages,
            "characters": self.characters,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> ParseResult:
        return cls(**data)


def parse_document(services: Services, request: StageRequest) -> ParseResult:
    """Parse the fetched source into ``<doc>/c-<hash>/parsed.json``; no-op when already done."""
    job = advance(services, request, JobStatus.PARSING)
    fetched = read_json(services, version_key(job.doc_id, job.version.key, "fetch.json"))
    if fetched is None:
        raise TransientError(f"{job.doc_id}: parse ran before fetch finished (no fetch checkpoint)")
    content_hash = str(fetched["content_hash"])
    checkpoint = content_key(job.doc_id, content_hash, "parse.json")
    parsed_key = content_key(job.doc_id, content_hash, "parsed.json")
    if (done := finished(services, checkpoint, parsed_key)) is not None:
        return ParseResult.from_payload(done)

    with tempfile.TemporaryDirectory(prefix="ingest-parse-") as scratch:
        # The parser child reads a local file: it needs random access (PDF, zip) and must not
        # hold a connection to the artifact store. The name carries no part of the blob name.
        local = Path(scratch) / "source"
        with local.open("wb") as out:
            for block in services.artifacts.open(str(fetched["source_key"])):
                out.write(block)
        parsed = parse_document_file(local, job.path, services.settings.limits)

    write_json(services, parsed_key, parsed.to_payload())
    result = ParseResult(
        parsed_key=parsed_key,
        content_type=parsed.content_type,
        title=parsed.title,
        pages=len(parsed.pages),
        characters=sum(len(page.text) for page in parsed.pages),
    )
    write_json(services, checkpoint, result.to_payload())
    return result
