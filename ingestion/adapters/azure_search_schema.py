"""The Azure AI Search index definition of a chunk, and the deploy step that creates or updates it.

The schema is ARCHITECTURE.md's "Index document": one document per chunk, keyed by the chunk id, with
the vector under an HNSW profile (cosine) and an optional semantic configuration. ``ensure_index`` is
what ``python -m ingestion index ensure`` runs (it needs a control-plane role); the app itself only
calls ``check_index``, which uses the data plane and never creates anything.

A vector field's dimensions cannot change in place, so ``ensure_index`` refuses that before asking the
service: the fix is a new index (``INGEST_SEARCH_INDEX``) and a re-ingest, not an update.
"""

from __future__ import annotations

from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    HnswParameters,
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    SemanticConfiguration,
    SemanticField,
    SemanticPrioritizedFields,
    SemanticSearch,
    SimpleField,
    VectorSearch,
    VectorSearchProfile,
)

from ingestion.adapters.azure_errors import translated
from ingestion.errors import PermanentError, ReasonCode

VECTOR_FIELD = "content_vector"
HNSW_ALGORITHM = "chunks-hnsw"
VECTOR_PROFILE = "chunks-vector-profile"
MAX_DIMENSIONS = 4096  # the service's limit for a vector field
DEPLOY_COMMAND = "python -m ingestion index ensure"

EnsureOutcome = Literal["created", "updated", "unchanged"]

_STRING = SearchFieldDataType.STRING.value
_STRINGS = f"Collection({_STRING})"
_INT = SearchFieldDataType.INT32.value
_DATE = SearchFieldDataType.DATE_TIME_OFFSET.value
# The attributes the comparison in ``ensure_index`` looks at; the service fills in the others.
_FIELD_ATTRIBUTES = (
    "type", "key", "retrievable", "searchable", "filterable", "sortable", "facetable", "dimensions",
    "vectorSearchProfile",
)  # fmt: skip


def index_schema(name: str, dimensions: int, semantic_configuration: str | None) -> SearchIndex:
    """The chunk index ``name`` for ``dimensions``-long vectors, with the semantic configuration if named."""
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise ValueError(f"dimensions must be between 1 and {MAX_DIMENSIONS}, not {dimensions}")
    fields = [
        SimpleField(name="id", type=_STRING, key=True, filterable=True, sortable=True),
        SimpleField(name="doc_id", type=_STRING, filterable=True),
        SimpleField(name="path", type=_STRING),
        _searchable("title", _STRING),
        _searchable("content", _STRING),
        SearchField(
            name=VECTOR_FIELD,
            type=f"Collection({SearchFieldDataType.SINGLE.value})",
            searchable=True,
            retrievable=False,  # 4 bytes a dimension per hit otherwise; can be turned on in place later
            vector_search_dimensions=dimensions,
            vector_search_profile_name=VECTOR_PROFILE,
        ),
        SimpleField(name="ordinal", type=_INT, filterable=True, sortable=True),
        SimpleField(name="page_start", type=_INT),
        SimpleField(name="page_end", type=_INT),
        _searchable("headings", _STRINGS),
        SimpleField(name="content_type", type=_STRING, filterable=True, facetable=True),
        SimpleField(name="content_hash", type=_STRING, filterable=True),
        SimpleField(name="version", type=_STRING, filterable=True),
        SimpleField(name="access_groups", type=_STRINGS, filterable=True),
        SimpleField(name="last_modified", type=_DATE, filterable=True, sortable=True),
        SimpleField(name="ingested_at", type=_DATE, filterable=True, sortable=True),
    ]
    vector_search = VectorSearch(
        # Explicit HNSW parameters (the service's defaults), so a read-back compares equal.
        algorithms=[
            HnswAlgorithmConfiguration(
                name=HNSW_ALGORITHM,
                parameters=HnswParameters(m=4, ef_construction=400, ef_search=500, metric="cosine"),
            )
        ],
        profiles=[VectorSearchProfile(name=VECTOR_PROFILE, algorithm_configuration_name=HNSW_ALGORITHM)],
    )
    semantic = None
    if semantic_configuration:
        prioritized = SemanticPrioritizedFields(
            title_field=SemanticField(field_name="title"),
            content_fields=[SemanticField(field_name="content")],
            keywords_fields=[SemanticField(field_name="headings")],
        )
        semantic = SemanticSearch(
            default_configuration_name=semantic_configuration,
            configurations=[SemanticConfiguration(name=semantic_configuration, prioritized_fields=prioritized)],
        )
    return SearchIndex(name=name, fields=fields, vector_search=vector_search, semantic_search=semantic)


def ensure_index(
    index_client: SearchIndexClient, name: str, dimensions: int, semantic_configuration: str | None
) -> EnsureOutcome:
    """Create the index, or update it to the current schema; says which (or that nothing changed).

    Raises ``PermanentError(INDEX_REJECTED)`` when the existing index holds vectors of another size,
    and whatever the classifier makes of a refused update (the service refuses changes to existing fields).
    """
    wanted = index_schema(name, dimensions, semantic_configuration)
    with translated(f"reading search index {name!r}", rejected=ReasonCode.INDEX_REJECTED):
        try:
            existing: SearchIndex | None = index_client.get_index(name)
        except ResourceNotFoundError:
            existing = None
    if existing is not None:
        held = vector_dimensions(existing)
        if held is not None and held != dimensions:
            raise PermanentError(
                ReasonCode.INDEX_REJECTED,
                f"search index {name!r} holds {held}-dimensional vectors, the embedder makes {dimensions}; "
                "a vector field cannot change size in place: set INGEST_SEARCH_INDEX to a new index name, "
                f"run '{DEPLOY_COMMAND}' and re-ingest",
            )
        if _comparable(existing) == _comparable(wanted):
            return "unchanged"
    with translated(f"writing search index {name!r}", rejected=ReasonCode.INDEX_REJECTED):
        index_client.create_or_update_index(wanted)
    return "created" if existing is None else "updated"


def check_index(client: SearchClient) -> int:
    """The number of documents in the client's index; a clear ``PermanentError`` when it does not exist.

    Uses the data plane (``docs/$count``), which the app's role can read; creating is the deploy step's job.
    """
    name = client._config.index_name  # the SDK keeps the index name on its configuration only
    try:
        with translated(f"checking search index {name!r}", rejected=ReasonCode.INDEX_REJECTED):
            return int(client.get_document_count())
    except PermanentError as error:
        if error.reason is not ReasonCode.NOT_FOUND:
            raise
        raise PermanentError(
            ReasonCode.NOT_FOUND,
            f"search index {name!r} does not exist; create it with '{DEPLOY_COMMAND}' (a deploy step)",
        ) from error


def vector_dimensions(index: SearchIndex) -> int | None:
    """The dimensions of the index's content vector field, or ``None`` when it has none."""
    for field in index.fields:
        if field.name == VECTOR_FIELD:
            return field.vector_search_dimensions
    return None


def _searchable(name: str, type_: str) -> SearchField:
    return SearchField(name=name, type=type_, searchable=True, retrievable=True)


def _comparable(index: SearchIndex) -> dict[str, Any]:
    """The parts of a definition this module sets, with the service's implied defaults made explicit."""
    data = index.as_dict()
    fields = {
        field["name"]: tuple(_field_attribute(field, attribute) for attribute in _FIELD_ATTRIBUTES)
        for field in data.get("fields", [])
    }
    vector = data.get("vectorSearch") or {}
    semantic = data.get("semantic") or {}
    return {
        "fields": fields,
        "algorithms": sorted(
            (a["name"], a.get("kind"), tuple(sorted((a.get("hnswParameters") or {}).items())))
            for a in vector.get("algorithms") or []
        ),
        "profiles": sorted((p["name"], p.get("algorithm")) for p in vector.get("profiles") or []),
        "semantic": sorted(
            (c["name"], repr(sorted(c.get("prioritizedFields", {}).items())))
            for c in semantic.get("configurations") or []
        ),
        "semantic_default": semantic.get("defaultConfiguration"),
    }


def _field_attribute(field: dict[str, Any], attribute: str) -> object:
    value = field.get(attribute)
    if attribute == "retrievable" and value is None:
        return not field.get("hidden", False)  # SimpleField writes "hidden"; the service answers "retrievable"
    if attribute in ("key", "searchable", "filterable", "sortable", "facetable") and value is None:
        return False
    return value
