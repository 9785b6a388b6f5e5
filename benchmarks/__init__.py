"""Timed side-by-side comparisons of headscope's fast paths against straightforward ones."""
