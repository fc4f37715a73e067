"""Guards that turn a verdict into a decision, each with a reason code."""
