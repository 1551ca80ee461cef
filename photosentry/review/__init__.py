"""Moderator review of quarantined uploads: decisions and the web page.

    decisions.py  release / confirm: the decision, its audit entry, its effects (banks,
                  files, uploader penalty) and its delivery (stream and callback)
    moderators.py sign-in tokens from the moderators' config file
    web.py        the server-rendered review page (FastAPI + Jinja2, templates/, static/)

The review queue itself (one record per quarantined upload, oldest first, and leases
so two moderators never get the same item) is :mod:`photosentry.worker.review_queue`:
the worker writes it, the CLI (`photosentry quarantine`) and the page read it and
decide. This package uses the worker; the worker never imports this package.
"""
