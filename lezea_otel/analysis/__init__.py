"""The runs as the CLI reads them afterwards: a run folder replayed (``runs``), a distributed experiment's
ranks and attempts (``experiment``), slow phases and stragglers (``timing``, ``attribution``), runs side by
side (``compare``), and the advice about ranks (``rank_advice``). Never loaded by a training process: the
write path (``model``) is all it needs."""
