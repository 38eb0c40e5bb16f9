"""Layer 4, who labels: the oracle, people (query and answer files, the page's server), LLM annotators; never imports engine."""
