"""Command-line plumbing of ``main.py`` that must not import Prefect (it runs first)."""
