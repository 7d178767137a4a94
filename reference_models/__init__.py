"""Reference training code that memaudit's studies run on.

It may import ``memaudit``'s public API; ``memaudit`` never imports it (the demo model is found
through the ``memaudit.demos`` entry point). Subpackages: ``data`` (data sets with no download,
shared by the models), ``ddpm`` (the paper's U-Net DDPM and memorization over training),
``ts_diffusion`` (the same DDPM on time-series windows, built on ``ddpm``) and ``random_features``
(the paper's solvable model); ``figures`` and ``fits`` serve the studies. Imports go one way
(``tests/test_imports.py``).
"""
