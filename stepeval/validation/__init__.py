"""Judge validation: derived controls, agreement statistics, and a listening page for human ratings (docs/judging.md)."""
