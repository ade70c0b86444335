"""mmfs: artistic face stylization with a StyleGAN2 generative prior (MMFS, Li et al. 2023).

Importing this package is cheap: it pulls in no torch. Import the sub-modules you need
(`mmfs.nn`, `mmfs.checkpoint`, `mmfs.train`, ...).
"""

__version__ = "0.1.0"
