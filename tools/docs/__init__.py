"""Documentation generators: the reference pages (API, chart values, `negrl` command) written from the
same models, schema and parsers the code uses, the status reasons the troubleshooting page must cover,
and the results pages copied from a run's report."""
