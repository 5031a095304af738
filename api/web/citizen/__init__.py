"""The citizen web app (mobile-first PWA) under /app."""
