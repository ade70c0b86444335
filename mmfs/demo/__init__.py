"""The built-in offline demo: synthetic data, a short run of every stage, a contact sheet."""
