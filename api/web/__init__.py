"""The web app: the citizen PWA (/app) and the manager console (/console), server-rendered."""
