"""The shared model: the record, its audit file, the run state and its readers."""
