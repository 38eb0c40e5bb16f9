"""Layer 4, the model: loading, batching, precision, dropout, forward, generation, scoring, training, evaluation."""
