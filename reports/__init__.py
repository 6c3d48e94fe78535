"""The auditor's report pages: who sees what (scope), the CSV columns, tables, filters and the audited download.

An edge of the core: it reads grants through `grants.selectors` and writes
nothing but its download's audit event. No models of its own.
"""
