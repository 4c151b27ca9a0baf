"""The training process's side: shape each call into a record, append it, keep the run state."""
