"""Self-RAG: a passage corpus, retrieval over it, and models that decide when to retrieve and judge what they read."""
