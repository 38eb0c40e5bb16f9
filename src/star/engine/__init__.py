"""Layer 4, the model: loading and placement, the adapter, batching, precision, dropout, forward, generation,
scoring, training, evaluation."""
