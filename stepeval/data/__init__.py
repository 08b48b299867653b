"""Dataset sources (hub, local clone, bundled sample), safe archive extraction, column mapping."""
