"""The `mmfs` command line. Heavy libraries are imported inside commands so `mmfs --help` stays fast."""
