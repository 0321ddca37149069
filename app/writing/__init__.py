"""Everything Retrain writes for people: comment replies, check-run text, the Markdown quoting rules that
keep untrusted text inert, and the generated reference (docs/reference.md). Pure: facts in, text out."""
