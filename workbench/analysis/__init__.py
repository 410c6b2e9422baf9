"""Reading scores: intervals pooled over runs and examples, verdicts, sequential looks, the eval plan, pictures."""
