"""Several nodes as one line: the balancing leader's election (and, beside it, what the nodes share)."""
