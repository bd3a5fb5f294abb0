"""Eliciting latent knowledge from quirky models: quirky datasets, activations and probes."""
