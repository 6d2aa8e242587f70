"""Serving past one process: the same server on Ray Serve, with the HTTP ingress and the models scaled apart.

``remote_engine`` (the Engine the binding sees, over a ``ModelHandle``) imports nothing from Ray; the modules that
do (``ray_handle``, ``deployments``, ``application``, ``launch``) are imported only when serving with
``--ray-replicas`` (the ``ray`` extra).
"""
