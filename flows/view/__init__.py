"""``reflectory view``: a local, read-only web app over the store (``flows.view.app``)."""
