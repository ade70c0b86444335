"""Image files and training datasets."""
