"""The FastAPI server: mounts every domain's router and the web UI."""
