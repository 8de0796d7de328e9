"""Session recordings: redacted, asciicast v2, encrypted to the auditors, signed by the bastion.

Modules, from the terminal's bytes to the file on disk:

* :mod:`~bastion.recording.redaction` (pure): a streaming redactor for output chunks;
* :mod:`~bastion.recording.asciicast` (pure): asciicast v2 header and event lines;
* :mod:`~bastion.recording.keys` (pure): key text formats and fingerprints;
* :mod:`~bastion.recording.sealed` (pure): the sealed file format, writing and verifying;
* :mod:`~bastion.recording.errors` (pure): what goes wrong, in one sentence each;
* :mod:`~bastion.recording.key_files` (I/O): key generation, loading, the signing key;
* :mod:`~bastion.recording.recorder` (I/O): one recording being written during a session;
* :mod:`~bastion.recording.store` (I/O): the recordings directory: find, list, prune;
* :mod:`~bastion.recording.playback` (I/O): playing a recording in a terminal.

Nothing is imported here, so that importing a pure module stays free of I/O.
"""
