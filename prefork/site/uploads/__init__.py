"""Uploads: PUT/DELETE under /uploads/ with atomic writes (`put`), POST /upload as JSON,
multipart or form data (`forms`)."""
