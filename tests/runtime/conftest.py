"""Fixtures of the runtime tests. Helpers live in fakes.py and live_server.py (this folder is on sys.path)."""
