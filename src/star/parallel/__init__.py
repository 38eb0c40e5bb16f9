"""Layer 1, processes: the distributed context, FSDP, DeepSpeed ZeRO-3, the training stepper."""
