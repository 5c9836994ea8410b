"""The audit trail's public face: the event a change records, the row's insert inside the change's own
transaction, and the read side (``registry/audit.py`` holds them, beside the registry that writes them)."""

from .registry.audit import ACTIONS, AuditEvent, AuditFilter, AuditItem, AuditLog, write_audit

__all__ = ["ACTIONS", "AuditEvent", "AuditFilter", "AuditItem", "AuditLog", "write_audit"]
