"""citykey API: identity, access policy, token issuing, the unlock relay, management, audit."""
