"""`polylm demo`: the whole PolyLM recipe at tiny scale on the embedded corpus, ending in a report."""
