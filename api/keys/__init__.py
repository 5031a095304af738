"""The signing key ring for unlock tokens and the published JWKS."""
