"""Stateful quota admission for pods, split by concern: quotas in force (source), reservation storage
(books), per-namespace group commit (lanes) and the decisions (engine)."""
