"""Numbers derived from a trace: head scores, logit lens, embedding geometry, timings."""
