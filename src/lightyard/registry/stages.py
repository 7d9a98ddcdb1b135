"""The stages a registered version can be in, apart from the store so that config checks read them
without importing BentoML."""

STAGES = ("none", "staging", "production")
