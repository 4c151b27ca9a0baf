"""The contract between the trainer and the exporter: the audit line. Every record kind and the payload its
``data`` holds (``record``, ``payloads``), the writer the trainer appends with (``writer``, in whole lines:
``line_file``) and the reader every other part reads it back with (``reader``). Nothing here knows a
tracker call, the run state or OpenTelemetry: both sides, and the CLI, meet here."""
