"""The webhook receiver (`retrain serve`) and its `/metrics`: verify, dedupe, enqueue, answer 202. It
plans nothing itself beyond knowing which events exist, and never calls GitHub."""
