"""Serving: the OpenAI-compatible app and its worker (`app`), the guards (`guard`), building
what is served from a rung or a stored run (`build`), and deployment bundles (`deploy`)."""
