"""webdancer."""
