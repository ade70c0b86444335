"""Using trained weights: load a Stylizer, pick styles, stylize photos and videos, measure the results.

models (files -> ready networks), latents (saved w+ styles), styles (CLIP prompts and references -> styles),
pipeline (aligned faces + styles -> images), files (photos on disk -> stylized files), video, stylize (a
StylizeRequest end to end), adapt (the `mmfs adapt` command around its stage), evaluate, metrics. Nothing under `mmfs.train` imports from here.
"""
