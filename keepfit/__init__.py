"""keepfit."""
