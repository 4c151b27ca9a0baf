"""The write path a training process needs: the record, its audit file, the run state its summary is made
from, and a run's own advice. The CLI's reading of finished runs is ``analysis``."""
