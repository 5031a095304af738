"""POST /v1/doors/{door_id}/unlock: authorize, sign, relay, wait, audit."""
