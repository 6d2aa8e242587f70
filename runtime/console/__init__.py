"""The local console at ``/_console``: a browser page to try every task on an image, invoke functions and watch
their invocations, and see the loaded models. Plain HTML, CSS and JavaScript modules shipped as package data.

``access`` (who may see it), ``history`` (invocations and their log lines), ``recorder`` (the middleware that
records them), ``routes`` (the page and its endpoints), ``static/`` (the page itself).
"""
