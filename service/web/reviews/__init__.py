"""Reviews of recorded inspections and shadow versions (CONTRACT-REVIEW.md)."""
