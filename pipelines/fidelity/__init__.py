"""How good a generator's samples are, whatever made them: features, distances (FID, KID), the
classifier two-sample test, precision/recall, memorization, and `gan-eval` (evaluate_gan_run), which
evaluates a finished run of any generator kind (pipelines/generators)."""
