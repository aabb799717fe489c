"""Scene files: the schema, loading, and the new-scene scaffold."""
