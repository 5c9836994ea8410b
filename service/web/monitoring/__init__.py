"""What Prometheus scrapes: GET /metrics."""
