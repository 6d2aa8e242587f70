"""The HTTP server: Starlette app (app.py), middleware (body limit, admission, request id, metrics), shutdown.

Nothing is imported here, so that runtime.openai can use the middleware's constants without importing the app.
"""
