"""Test support, kept out of the installed package: stand-in weight files in the public releases' own (pickled)
containers, the official key tables, and the doc command lines the real-size tier runs."""
