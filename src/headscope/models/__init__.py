"""Model loading: the bundled organism, local Hugging Face directories, hub names."""
