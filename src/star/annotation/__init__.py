"""Layer 4, who labels: the oracle, people (query and answer files, the page's server); never imports engine."""
