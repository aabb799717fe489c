"""Feature-level ensemble of heterogeneous detectors (and its output-level baseline);
see ``README.md`` here."""
