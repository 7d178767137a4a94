"""Reference training code that memaudit's studies run on.

It may import ``memaudit``; ``memaudit`` never imports it. Subpackages arrive with their issues:
``ddpm`` (the paper's U-Net DDPM and memorization over training), ``ts_diffusion`` (a 1-D
diffusion model for time series) and ``random_features`` (the paper's solvable model).
"""
