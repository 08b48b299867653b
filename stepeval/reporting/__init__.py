"""From score records to tables: summaries, Markdown tables, comparisons across runs."""
