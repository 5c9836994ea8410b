"""The quality engineer's console (/console/): server-rendered pages, their templates and static assets."""
