"""cuda implementations: (being written)."""
