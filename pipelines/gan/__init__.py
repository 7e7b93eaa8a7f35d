"""A GAN run on disk, the filter pre-augmentation, synthesis and GAN evaluation."""
