"""GET /audit: the trail of every change (who, when, what before and after)."""
