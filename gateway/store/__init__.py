"""The SQLite store: the durable file, its schema migrations, the search index and case rows."""
