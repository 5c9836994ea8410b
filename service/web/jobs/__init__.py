"""Jobs run off the request path: start a replay of a model version, read any job from any host."""
