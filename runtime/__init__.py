"""Serve-time package: loads model folders and answers requests; never imports torch or transformers."""
