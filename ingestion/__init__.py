"""A file-ingestion pipeline for RAG chatbots that does not lose files."""
