"""Model backends: one module per model family, each a small class with ``respond(history, context)``."""
