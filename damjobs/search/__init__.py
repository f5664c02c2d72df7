"""The search index of the DAM's files: documents, mapping, client, rebuild and rollback."""
