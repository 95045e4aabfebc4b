"""One router per resource of the /v1 API, plus health, metrics and the web pages."""
