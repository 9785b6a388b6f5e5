"""Tasks: templates with named roles, built-in generators, user TOML tasks, datasets."""
