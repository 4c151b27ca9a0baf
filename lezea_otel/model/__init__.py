"""What a training process makes of its records: the run state its summary is made from, a run's own
advice, and its workers' and ranks' audits folded in. The records and their file are ``audit``; the CLI's
reading of finished runs is ``analysis``."""
