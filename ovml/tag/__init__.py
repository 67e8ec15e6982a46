"""`ovml tag`: whole folders and caches tagged with any vocabulary, into tables and sidecars."""
