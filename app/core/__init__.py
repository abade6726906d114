"""Cross-cutting pieces with no domain knowledge: errors, validation, paging, auth, tenancy, caching."""
