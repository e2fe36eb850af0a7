"""Image sources for the acquire stage: synthetic (offline default), folder, safebooru."""
