"""Phases and values of the training frameworks, without a span written by hand: one module per framework
(``lightning``, ``transformers``, ``accelerate``), each imported only when the user imports it, each an
optional extra (``pip install 'lezea_otel[lightning]'``). Plain PyTorch needs none: ``tracker.watch``."""
