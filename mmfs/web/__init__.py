"""`mmfs web`: a local page (Gradio, the `web` extra) to try the models on your own photos.

models.py (the names a visitor picks from), jobs.py (page values -> the command line's request
objects -> the core), page.py (the Gradio Blocks), serve.py (gather everything, launch offline).
"""
