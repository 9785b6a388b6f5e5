"""Renderers: figures, console tables and the HTML report."""
