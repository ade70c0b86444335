"""Small helpers shared by the whole package (device choice, seeding, atomic files)."""
