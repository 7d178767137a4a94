"""The paper's U-Net DDPM: model, diffusion math, data and training (see reference_models/README.md)."""
