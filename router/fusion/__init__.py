"""Fusion: a panel of models answers in parallel, a judge compares, a synthesizer writes one answer."""
