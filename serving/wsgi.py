"""The WSGI entry point for gunicorn: ``gunicorn -c serving/gunicorn.conf.py serving.wsgi:app``.

Each gunicorn worker imports this module after the fork, so each builds its own app (and
loads the model) from the environment.
"""

from serving.app import create_app

app = create_app()
