"""Test support shipped with the package: stand-in weight files of every public file mmfs reads."""
