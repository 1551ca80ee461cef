"""Moderator review of quarantined uploads: the queue, claims, decisions and the web page.

    queue.py      the review queue in Redis: one record per quarantined upload, oldest
                  first, and leases so two moderators never get the same item
    decisions.py  release / confirm: the decision, its audit entry, its effects (banks,
                  files, uploader penalty) and its delivery (stream and callback)
    moderators.py sign-in tokens from the moderators' config file
    web.py        the server-rendered review page (FastAPI + Jinja2, templates/, static/)

The worker writes the queue (photosentry.worker.service indexes each quarantined
upload); the CLI (`photosentry quarantine`) and the page read it and decide.
``queue`` imports nothing from the worker, so the worker can use it without a cycle.
"""
