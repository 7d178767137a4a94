"""The paper's U-Net DDPM: model, diffusion math, config, checkpoints, training and the studies over
checkpoints (see reference_models/README.md)."""
