"""The prediction service: Flask on gunicorn, serving the model the pipeline publishes.

``serving.app.create_app`` builds the app; ``serving.wsgi:app`` is what gunicorn runs with
``serving/gunicorn.conf.py``. This package's ``__init__`` imports nothing: gunicorn's master
imports ``serving.gunicorn_logging`` before it sets ``PROMETHEUS_MULTIPROC_DIR``, and
prometheus_client must not be imported before that.
"""
