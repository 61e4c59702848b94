"""The dashboard: the JSON API under /api/v1/ (api.py, described by openapi.yaml), the pages and their
server-side SVG charts (pages.py, charts.py, templates/), and the HTTP edge both share (http.py, params.py).
functions/dashboard.py routes requests here; docs/dashboard.md says what each shows and why."""
